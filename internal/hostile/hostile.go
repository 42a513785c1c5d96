package hostile

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Dialer connects to one server from one local address.
type Dialer struct {
	// Addr is the server, host:port.
	Addr string
	// From is the local IP to connect from ("" for any), e.g. 127.0.0.2.
	From string
	// Timeout bounds each connect and handshake (default 10s).
	Timeout time.Duration
}

func (d Dialer) timeout() time.Duration {
	if d.Timeout > 0 {
		return d.Timeout
	}
	return 10 * time.Second
}

// TCP opens a TCP connection from d.From.
func (d Dialer) TCP() (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout()}
	if d.From != "" {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(d.From)}
	}
	return nd.Dial("tcp", d.Addr)
}

// Silent connects and sends nothing: it holds a pre-authentication slot
// until the server cuts it.
func (d Dialer) Silent() (net.Conn, error) { return d.TCP() }

// HalfHandshake connects and sends only the version line, then stalls.
func (d Dialer) HalfHandshake() (net.Conn, error) {
	c, err := d.TCP()
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte("SSH-2.0-hostile\r\n")); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Garbage connects, writes n bytes that are not SSH and closes.
func (d Dialer) Garbage(n int) error {
	c, err := d.TCP()
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d.timeout()))
	_, err = c.Write([]byte(strings.Repeat("\x00\xffGET / HTTP/1.1\r\n", n/17+1)[:n]))
	return err
}

// Login logs in as user with signers.
func (d Dialer) Login(user string, signers ...ssh.Signer) (*ssh.Client, error) {
	c, err := d.TCP()
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(d.timeout()))
	sc, chans, reqs, err := ssh.NewClientConn(c, d.Addr, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         d.timeout(),
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// FailAuth tries to log in as user with n fresh keys the server cannot
// know, and returns the error the server ended it with.
func (d Dialer) FailAuth(user string, n int) error {
	keys := make([]ssh.Signer, n)
	for i := range keys {
		keys[i] = NewKey()
	}
	c, err := d.Login(user, keys...)
	if err == nil {
		c.Close()
		return fmt.Errorf("logged in as %q with unknown keys", user)
	}
	return err
}

// NewKey returns a fresh ed25519 signer.
func NewKey() ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		panic(err)
	}
	return s
}

// EnvFlood sends n env requests on s, each named name(i) with a value of
// size bytes, and returns how many the server accepted.
func EnvFlood(s *ssh.Session, n, size int, name func(i int) string) (accepted int, err error) {
	value := strings.Repeat("v", size)
	for i := 0; i < n; i++ {
		ok, err := s.SendRequest("env", true, ssh.Marshal(struct{ Name, Value string }{name(i), value}))
		if err != nil {
			return accepted, err
		}
		if ok {
			accepted++
		}
	}
	return accepted, nil
}

// Env sends one env request and reports whether it was accepted.
func Env(s *ssh.Session, name, value string) (bool, error) {
	return s.SendRequest("env", true, ssh.Marshal(struct{ Name, Value string }{name, value}))
}

// ChannelFlood opens up to n session channels on c without using them
// and returns the open ones (close them) and how many were refused.
func ChannelFlood(c *ssh.Client, n int) (open []ssh.Channel, refused int) {
	for i := 0; i < n; i++ {
		ch, reqs, err := c.OpenChannel("session", nil)
		if err != nil {
			refused++
			continue
		}
		go ssh.DiscardRequests(reqs)
		open = append(open, ch)
	}
	return open, refused
}

// Exec runs cmd in a new session and returns its stdout, stderr and
// error (an *ssh.ExitError for a non-zero status).
func Exec(c *ssh.Client, cmd string) (stdout, stderr string, err error) {
	s, err := c.NewSession()
	if err != nil {
		return "", "", err
	}
	defer s.Close()
	var o, e strings.Builder
	s.Stdout, s.Stderr = &o, &e
	err = s.Run(cmd)
	return o.String(), e.String(), err
}

package sshd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session"
)

// echoOnce accepts one forwarded connection on l and echoes a line.
func echoOnce(l net.Listener) <-chan error {
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			_, err = io.WriteString(c, "echo "+line)
		}
		done <- err
	}()
	return done
}

// roundTrip connects to addr (as a process of the account would: the
// local backend's loopback is this host's) and checks the echo.
func roundTrip(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connect to the remote forward %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "echo hello\n" {
		t.Fatalf("through the remote forward: %q, %v", line, err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestRemoteForward(t *testing.T) {
	auditLog := &syncBuf{}
	f := newFixtureWith(t, fixtureOpts{audit: auditLog})
	c := f.dial(t, f.user)
	defer c.Close()

	// -R 0:...: the server allocates the port and reports it.
	l, err := c.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcpip-forward port 0: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if port == 0 {
		t.Fatal("no allocated port in the reply")
	}
	done := echoOnce(l)
	roundTrip(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// cancel-tcpip-forward: the port stops accepting.
	if err := l.Close(); err != nil {
		t.Fatalf("cancel-tcpip-forward: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("the port still accepts after cancel-tcpip-forward")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// -R PORT:...: a fixed port.
	fixed := freePort(t)
	l2, err := c.Listen("tcp", net.JoinHostPort("localhost", strconv.Itoa(fixed)))
	if err != nil {
		t.Fatalf("tcpip-forward port %d: %v", fixed, err)
	}
	done = echoOnce(l2)
	roundTrip(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(fixed)))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Cancelling a forward that does not exist fails.
	ok, _, err := c.SendRequest("cancel-tcpip-forward", true, ssh.Marshal(tcpipForwardMsg{"localhost", 1}))
	if err != nil || ok {
		t.Errorf("cancel of an unknown forward: ok %v err %v", ok, err)
	}
	for _, want := range []string{`"event":"forward.listen"`, `"kind":"remote"`, `"event":"forward.open"`, `"event":"forward.close"`} {
		if !strings.Contains(auditLog.String(), want) {
			t.Errorf("audit log lacks %s:\n%s", want, auditLog.String())
		}
	}
	c.Close()
	// The connection's end closes its listeners.
	deadline = time.Now().Add(5 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(fixed)), time.Second)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("the port still accepts after the connection closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRemoteForwardRefused(t *testing.T) {
	permitted := freePort(t)
	tests := []struct {
		name    string
		opts    string
		disable bool
		addr    string
		ok      bool
		reason  string
	}{
		{name: "no-port-forwarding", opts: "no-port-forwarding", addr: "127.0.0.1:0", reason: "no-port-forwarding"},
		{name: "restrict", opts: "restrict", addr: "127.0.0.1:0", reason: "no-port-forwarding"},
		{name: "forwarding.remote false", disable: true, addr: "127.0.0.1:0", reason: "forwarding.remote"},
		{name: "permitlisten other port", opts: fmt.Sprintf(`permitlisten="%d"`, permitted), addr: "127.0.0.1:0", reason: "permitlisten"},
		{name: "permitlisten port", opts: fmt.Sprintf(`permitlisten="%d"`, permitted), addr: fmt.Sprintf("localhost:%d", permitted), ok: true},
		{name: "permitlisten host", opts: fmt.Sprintf(`permitlisten="127.0.0.1:%d"`, permitted), addr: fmt.Sprintf("localhost:%d", permitted), reason: "permitlisten"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auditLog := &syncBuf{}
			f := newFixtureWith(t, fixtureOpts{audit: auditLog,
				mutate: func(s *Settings) { s.Forwarding.Remote = !tt.disable },
				keys: func(pub ssh.PublicKey) []auth.AuthorizedKey {
					return []auth.AuthorizedKey{keyLine(t, tt.opts, pub)}
				}})
			c := f.dial(t, f.user)
			defer c.Close()
			host, ps, _ := net.SplitHostPort(tt.addr)
			port, _ := strconv.Atoi(ps)
			ok, _, err := c.SendRequest("tcpip-forward", true, ssh.Marshal(tcpipForwardMsg{host, uint32(port)}))
			if err != nil || ok != tt.ok {
				t.Fatalf("tcpip-forward %s: ok %v err %v, want %v", tt.addr, ok, err, tt.ok)
			}
			if !tt.ok && (!strings.Contains(auditLog.String(), `"event":"forward.deny"`) || !strings.Contains(auditLog.String(), tt.reason)) {
				t.Errorf("audit log has no forward.deny for %s:\n%s", tt.reason, auditLog.String())
			}
		})
	}
}

func TestRemoteForwardLimit(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t, f.user)
	defer c.Close()
	var ls []net.Listener
	for range maxRemoteForwards {
		l, err := c.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("forward %d: %v", len(ls)+1, err)
		}
		ls = append(ls, l)
	}
	if _, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Fatalf("forward %d accepted; the limit is %d", maxRemoteForwards+1, maxRemoteForwards)
	}
	// Cancelling one frees a place.
	ls[0].Close()
	l, err := c.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("after a cancel: %v", err)
	}
	l.Close()
	// Keepalives asked after forwarding are still answered, in order.
	if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil {
		t.Fatal(err)
	}
}

// newAgent returns a client-side agent holding one fresh key.
func newAgent(t *testing.T) (agent.Agent, ssh.PublicKey) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	kr := agent.NewKeyring()
	if err := kr.Add(agent.AddedKey{PrivateKey: priv, Comment: "forwarded-test-key"}); err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	return kr, signer.PublicKey()
}

func TestAgentForwarding(t *testing.T) {
	auditLog := &syncBuf{}
	f := newFixtureWith(t, fixtureOpts{audit: auditLog})
	c := f.dial(t, f.user)
	defer c.Close()
	kr, pub := newAgent(t)
	if err := agent.ForwardToAgent(c, kr); err != nil {
		t.Fatal(err)
	}
	fp := ssh.FingerprintSHA256(pub)
	out, err := runCmd(t, c, agent.RequestAgentForwarding,
		`stat -c '%a' "$SSH_AUTH_SOCK" "$(dirname "$SSH_AUTH_SOCK")"; ssh-add -l`)
	if err != nil {
		t.Fatalf("session with agent forwarding: %v: %q", err, out)
	}
	if !strings.HasPrefix(out, "600\n700\n") || !strings.Contains(out, fp) {
		t.Errorf("want a 0600 socket in a 0700 directory listing %s, got %q", fp, out)
	}
	// A later session of the connection gets it too, without asking.
	out, err = runCmd(t, c, nil, `ssh-add -l`)
	if err != nil || !strings.Contains(out, fp) {
		t.Errorf("later session: %v %q", err, out)
	}
	if !strings.Contains(auditLog.String(), `"kind":"agent"`) {
		t.Errorf("audit log has no agent event:\n%s", auditLog.String())
	}
	// The socket goes with the connection.
	sock, _ := runCmd(t, c, nil, `printf %s "$SSH_AUTH_SOCK"`)
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := net.Dial("unix", sock); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent socket %s still accepts after the connection closed", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAgentForwardingRefused(t *testing.T) {
	for _, tt := range []struct {
		name, opts string
		disable    bool
	}{
		{"no-agent-forwarding", "no-agent-forwarding", false},
		{"restrict", "restrict", false},
		{"forwarding.agent false", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixtureWith(t, fixtureOpts{
				mutate: func(s *Settings) { s.Forwarding.Agent = !tt.disable },
				keys: func(pub ssh.PublicKey) []auth.AuthorizedKey {
					return []auth.AuthorizedKey{keyLine(t, tt.opts, pub)}
				}})
			c := f.dial(t, f.user)
			defer c.Close()
			kr, _ := newAgent(t)
			if err := agent.ForwardToAgent(c, kr); err != nil {
				t.Fatal(err)
			}
			var reqErr error
			out, _ := runCmd(t, c, func(s *ssh.Session) error {
				reqErr = agent.RequestAgentForwarding(s)
				return nil
			}, `echo "sock=$SSH_AUTH_SOCK"`)
			if reqErr == nil {
				t.Error("auth-agent-req accepted")
			}
			if out != "sock=\n" {
				t.Errorf("SSH_AUTH_SOCK set: %q", out)
			}
		})
	}
}

// refusingListener is a backend whose Listen fails with a message for
// the user, as kube's does without kube.pod.helper_image.
type refusingListener struct{ session.Backend }

func (refusingListener) Listen(context.Context, session.Request, string, string) (net.Listener, error) {
	return nil, session.UserErrorf(nil, "agent and remote forwarding need the helper (test)")
}

// TestForwardRefusedByBackendTellsUser: the replies to tcpip-forward and
// auth-agent-req carry no message, so the user reads the backend's in the
// session.
func TestForwardRefusedByBackendTellsUser(t *testing.T) {
	f := newFixtureWith(t, fixtureOpts{wrap: func(b session.Backend) session.Backend { return refusingListener{b} }})
	c := f.dial(t, f.user)
	defer c.Close()
	if _, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Fatal("tcpip-forward accepted")
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var stderr bytes.Buffer
	s.Stderr = &stderr
	reqErr := agent.RequestAgentForwarding(s)
	if err := s.Run("true"); err != nil {
		t.Fatal(err)
	}
	if reqErr == nil {
		t.Error("auth-agent-req accepted")
	}
	for _, want := range []string{"remote forwarding of 127.0.0.1:0: agent and remote forwarding need the helper (test)", "agent forwarding: agent and remote forwarding need the helper (test)"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q lacks %q", stderr.String(), want)
		}
	}
}

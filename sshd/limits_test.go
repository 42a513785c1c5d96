package sshd

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestMaxAuthTries(t *testing.T) {
	f := newFixture(t, func(s *Settings) { s.Limits.MaxAuthTries = 2 })
	var keys []ssh.Signer
	for i := 0; i < 5; i++ {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		s, _ := ssh.NewSignerFromKey(k)
		keys = append(keys, s)
	}
	keys = append(keys, f.signer) // the right key comes too late
	_, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{
		User: f.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(keys...)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if err == nil {
		t.Fatal("logged in after more than max_auth_tries keys")
	}
	if n := strings.Count(f.logs.String(), "key not authorized"); n > 3 {
		t.Errorf("server looked at %d keys with max_auth_tries 2", n)
	}
}

func TestConnsPerSource(t *testing.T) {
	f := newFixture(t, func(s *Settings) { s.Limits.MaxConnsPerSource = 2 })
	a := f.dial(t, f.user)
	defer a.Close()
	b := f.dial(t, f.user)
	defer b.Close()
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectRefused(t, c, "third connection from one address")
	if !strings.Contains(f.logs.String(), "reason=max_conns_per_source") {
		t.Error("no log line for the refusal")
	}
	b.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		cl, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{User: f.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(f.signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey()})
		if err == nil {
			cl.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a slot did not free up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A client that stops answering keepalives is disconnected with a reason.
func TestKeepaliveTimeout(t *testing.T) {
	f := newFixture(t, func(s *Settings) {
		s.Limits.KeepaliveInterval = 100 * time.Millisecond
		s.Limits.KeepaliveCountMax = 2
	})
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	// A client whose global requests are never answered: x/crypto answers
	// them only if the application reads the channel, so a stalled
	// reader simulates a dead peer behind a live TCP connection.
	conn, chans, reqs, err := ssh.NewClientConn(nc, f.addr, &ssh.ClientConfig{
		User: f.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(f.signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = chans
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range reqs { // hold each keepalive without replying
			<-stop
		}
	}()
	defer func() { close(stop); conn.Close(); <-done }()
	waitCond(t, "disconnect after missed keepalives", 10*time.Second, func() bool {
		return strings.Contains(f.logs.String(), "client stopped answering keepalives")
	})
}

func TestHostKeyAlgorithms(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := ssh.NewSignerFromKey(rk)
	restricted, err := restrictRSA(rs)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(s *Settings) { s.HostKeys = HostKeys{signers: []ssh.Signer{restricted}} })
	dial := func(algo string) error {
		c, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{
			User: f.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(f.signer)},
			HostKeyCallback: ssh.InsecureIgnoreHostKey(), HostKeyAlgorithms: []string{algo},
		})
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, ok := range []string{ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512} {
		if err := dial(ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	if err := dial(ssh.KeyAlgoRSA); err == nil {
		t.Error("ssh-rsa (SHA-1) signatures accepted")
	}
	// And no CBC, SHA-1 MACs or SHA-1 key exchange.
	for _, cfg := range []ssh.Config{
		{Ciphers: []string{"aes128-cbc"}},
		{Ciphers: []string{ssh.CipherAES128CTR}, MACs: []string{ssh.HMACSHA1}},
		{Ciphers: []string{ssh.CipherAES128CTR}, MACs: []string{ssh.HMACSHA256}},
		{KeyExchanges: []string{"diffie-hellman-group14-sha1"}},
		{KeyExchanges: []string{ssh.KeyExchangeECDHP256}},
	} {
		c, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{
			User: f.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(f.signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			Config: cfg,
		})
		if err == nil {
			t.Errorf("%+v accepted", cfg)
			c.Close()
		}
	}
}

func waitCond(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

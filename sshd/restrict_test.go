package sshd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// dialRecorder records the account of every Dial.
type dialRecorder struct {
	session.Backend
	mu       sync.Mutex
	accounts []string
}

func (d *dialRecorder) Dial(ctx context.Context, r session.Request, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.accounts = append(d.accounts, r.Account.Name)
	d.mu.Unlock()
	return d.Backend.Dial(ctx, r, network, addr)
}

func (f *fixture) dialErr(user string, signer ssh.Signer) error {
	c, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{
		User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second,
	})
	if err == nil {
		c.Close()
	}
	return err
}

func TestToolLoginDecidedAtAuthentication(t *testing.T) {
	rec := &dialRecorder{}
	auditLog := &syncBuf{}
	f := newFixtureWith(t, fixtureOpts{
		wrap:   func(b session.Backend) session.Backend { rec.Backend = b; return rec },
		audit:  auditLog,
		mutate: exemptLoopback,
	})
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewSignerFromKey(otherPriv)
	wrongKey := f.dialErr(f.user, other)
	if wrongKey == nil {
		t.Fatal("a wrong key got in")
	}
	for _, login := range []string{f.user + "+othertl", f.user + "+nosuchtool"} {
		err := f.dialErr(login, f.signer)
		if err == nil {
			t.Fatalf("%s authenticated", login)
		}
		if err.Error() != wrongKey.Error() {
			t.Errorf("%s: client saw %q, want the wrong-key refusal %q", login, err, wrongKey)
		}
	}
	a := auditLog.String()
	for _, want := range []string{`"event":"auth.failure"`, "may not act as tool othertl", "nosuchtool: not found"} {
		if !strings.Contains(a, want) {
			t.Errorf("audit log lacks %q:\n%s", want, a)
		}
	}
	if strings.Contains(a, `"event":"auth.success"`) {
		t.Errorf("a refused tool login was audited as a success:\n%s", a)
	}

	// An allowed tool login forwards as the tool.
	echo := sessiontest.EchoServer(t)
	c := f.dial(t, f.user+"+mytool")
	defer c.Close()
	conn, err := c.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("x\n"))
	b := make([]byte, 2)
	if _, err := conn.Read(b); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	rec.mu.Lock()
	got := append([]string(nil), rec.accounts...)
	rec.mu.Unlock()
	if len(got) != 1 || got[0] != "tools.mytool" {
		t.Errorf("Dial accounts = %q, want [tools.mytool]", got)
	}
	waitForLog(t, auditLog, `"event":"forward.open"`)
	for _, want := range []string{`"event":"auth.success"`, `"account":"tools.mytool"`, `"tool":"mytool"`} {
		if !strings.Contains(auditLog.String(), want) {
			t.Errorf("audit log lacks %q:\n%s", want, auditLog.String())
		}
	}
}

// exemptLoopback keeps this package's penalties (which refuse a source
// after a few failed logins) out of tests that fail logins on purpose.
func exemptLoopback(s *Settings) { s.Limits.Penalties.Exempt = []string{"127.0.0.1", "::1"} }

func waitForLog(t *testing.T, b *syncBuf, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in:\n%s", s, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func keyLine(t testing.TB, opts string, pub ssh.PublicKey) auth.AuthorizedKey {
	t.Helper()
	k, err := auth.ParseAuthorizedKey([]byte(opts+" "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))), "authorized_keys:1")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func runCmd(t *testing.T, c *ssh.Client, setup func(*ssh.Session) error, cmd string) (string, error) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if setup != nil {
		if err := setup(s); err != nil {
			return "", err
		}
	}
	var out bytes.Buffer
	s.Stdout = &out
	if cmd == "" {
		err = s.Shell()
		if err == nil {
			err = s.Wait()
		}
	} else {
		err = s.Run(cmd)
	}
	return out.String(), err
}

func TestForcedCommandAndNoPTY(t *testing.T) {
	auditLog := &syncBuf{}
	f := newFixtureWith(t, fixtureOpts{audit: auditLog, keys: func(pub ssh.PublicKey) []auth.AuthorizedKey {
		return []auth.AuthorizedKey{keyLine(t, `command="echo forced:\"$SSH_ORIGINAL_COMMAND\"",no-pty,no-port-forwarding`, pub)}
	}, mutate: func(s *Settings) { s.SSH.SFTPServer = "/usr/lib/openssh/sftp-server" }})
	c := f.dial(t, f.user)
	defer c.Close()
	for _, tt := range []struct {
		name, cmd string
		setup     func(*ssh.Session) error
		want      string
	}{
		{"exec", "id -u", nil, "forced:id -u\n"},
		{"shell", "", nil, "forced:\n"},
		{"scp", "scp -t /tmp", nil, "forced:scp -t /tmp\n"},
		{"rsync", "rsync --server -e.Lsfx . /tmp", nil, "forced:rsync --server -e.Lsfx . /tmp\n"},
		{"become", "become mytool id", nil, "forced:become mytool id\n"},
	} {
		out, err := runCmd(t, c, tt.setup, tt.cmd)
		if err != nil || out != tt.want {
			t.Errorf("%s: out %q err %v, want %q", tt.name, out, err, tt.want)
		}
	}
	// sftp is replaced too.
	s, _ := c.NewSession()
	stdout, _ := s.StdoutPipe()
	if err := s.RequestSubsystem("sftp"); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(stdout)
	s.Close()
	if !strings.HasPrefix(string(out), "forced:") || !strings.Contains(string(out), "sftp-server") {
		t.Errorf("sftp: %q", out)
	}
	// no-pty: the pty request is refused; the session goes on without.
	s, _ = c.NewSession()
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err == nil {
		t.Error("pty allowed with no-pty")
	}
	s.Close()
	// no-port-forwarding: administratively prohibited.
	_, err := c.Dial("tcp", sessiontest.EchoServer(t))
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited || !strings.Contains(oce.Message, "no-port-forwarding") {
		t.Errorf("forward with no-port-forwarding: %v", err)
	}
	waitForLog(t, auditLog, `"event":"forward.deny"`)
	a := auditLog.String()
	for _, want := range []string{`"restrictions":["command","no-port-forwarding","no-pty"]`, `"key_source":"authorized_keys:1"`, `"original_command":"id -u"`} {
		if !strings.Contains(a, want) {
			t.Errorf("audit log lacks %s:\n%s", want, a)
		}
	}
}

func TestPermitOpen(t *testing.T) {
	echo := sessiontest.EchoServer(t)
	_, port, _ := net.SplitHostPort(echo)
	f := newFixtureWith(t, fixtureOpts{keys: func(pub ssh.PublicKey) []auth.AuthorizedKey {
		return []auth.AuthorizedKey{keyLine(t, `restrict,port-forwarding,permitopen="127.0.0.1:`+port+`"`, pub)}
	}})
	c := f.dial(t, f.user)
	defer c.Close()
	conn, err := c.Dial("tcp", echo)
	if err != nil {
		t.Fatalf("permitted destination: %v", err)
	}
	conn.Close()
	_, err = c.Dial("tcp", "127.0.0.1:1")
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited || !strings.Contains(oce.Message, "permitopen") {
		t.Errorf("other destination: %v", err)
	}
	// restrict: no pty.
	s, _ := c.NewSession()
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err == nil {
		t.Error("pty allowed with restrict")
	}
	s.Close()
}

func TestKeyFromAndExpiry(t *testing.T) {
	for _, opts := range []string{`from="10.0.0.0/8"`, `from="*,!127.0.0.1"`, `expiry-time="20200101Z"`} {
		t.Run(opts, func(t *testing.T) {
			f := newFixtureWith(t, fixtureOpts{mutate: exemptLoopback, keys: func(pub ssh.PublicKey) []auth.AuthorizedKey {
				return []auth.AuthorizedKey{keyLine(t, opts, pub)}
			}})
			if err := f.dialErr(f.user, f.signer); err == nil {
				t.Errorf("%s: logged in", opts)
			}
		})
	}
	f := newFixtureWith(t, fixtureOpts{keys: func(pub ssh.PublicKey) []auth.AuthorizedKey {
		return []auth.AuthorizedKey{keyLine(t, `from="127.0.0.0/8",expiry-time="20990101"`, pub)}
	}})
	if err := f.dialErr(f.user, f.signer); err != nil {
		t.Errorf("allowed address: %v", err)
	}
}

func TestCertificateLogin(t *testing.T) {
	_, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caPriv)
	auditLog := &syncBuf{}
	f := newFixtureWith(t, fixtureOpts{
		audit: auditLog,
		keys:  func(ssh.PublicKey) []auth.AuthorizedKey { return nil },
		mutate: func(s *Settings) {
			s.Trust = &auth.Trust{CAs: []auth.AuthorizedKey{{Key: ca.PublicKey(), Source: "ca.pub:1"}}}
		},
	})
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewSignerFromKey(priv)
	cert := &ssh.Certificate{Key: key.PublicKey(), CertType: ssh.UserCert, KeyId: "alice@corp", Serial: 9,
		ValidPrincipals: []string{f.user}, ValidBefore: ssh.CertTimeInfinity,
		Permissions: ssh.Permissions{CriticalOptions: map[string]string{"force-command": "echo cert-forced"}, Extensions: map[string]string{"permit-pty": ""}}}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	cs, _ := ssh.NewCertSigner(cert, key)
	for _, login := range []string{f.user, f.user + "+mytool"} {
		c, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{User: login, Auth: []ssh.AuthMethod{ssh.PublicKeys(cs)}, HostKeyCallback: ssh.InsecureIgnoreHostKey()})
		if err != nil {
			t.Fatalf("%s: %v", login, err)
		}
		out, err := runCmd(t, c, nil, "id")
		if err != nil || out != "cert-forced\n" {
			t.Errorf("%s: out %q err %v", login, out, err)
		}
		// No permit-port-forwarding extension: no forwarding.
		if _, err := c.Dial("tcp", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "no-port-forwarding") {
			t.Errorf("%s: forward: %v", login, err)
		}
		c.Close()
	}
	if err := f.dialErr(f.user+"+othertl", cs); err == nil {
		t.Error("certificate login as a tool the user does not maintain")
	}
	// The plain key under the certificate is not a login key.
	if err := f.dialErr(f.user, key); err == nil {
		t.Error("certificate's bare key logged in")
	}
	for _, want := range []string{`"cert_id":"alice@corp"`, `"cert_serial":9`, `"key_source":"ssh.trusted_user_ca_keys ca.pub:1"`} {
		if !strings.Contains(auditLog.String(), want) {
			t.Errorf("audit log lacks %s:\n%s", want, auditLog.String())
		}
	}
}

package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// pubKey returns the one-line public key of a key made by userKey.
func pubKey(t testing.TB, key string) string {
	t.Helper()
	b, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// keygen runs ssh-keygen and fails the test on error.
func keygen(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("ssh-keygen", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen %q: %v\n%s", args, err, out)
	}
}

// startTrustDev starts `bastion dev` with authorizedKeys as the user's
// authorized_keys file (content written before start) and extra config.
// The first key made (dir/id_ed25519) is the server's default key.
func startTrustDev(t *testing.T, dir, authorizedKeys, configYAML string) *server {
	t.Helper()
	ak := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(ak, []byte(authorizedKeys), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"dev", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "state"), "--authorized-keys", ak}
	if configYAML != "" {
		cfg := filepath.Join(dir, "bastion.yaml")
		if err := os.WriteFile(cfg, []byte(configYAML), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", cfg)
	}
	return startBastion(t, dir, filepath.Join(dir, "id_ed25519"), args...)
}

// TestAuthorizedKeyOptions drives real OpenSSH clients against keys with
// options in the user's authorized_keys file, on `bastion dev`: every
// one of these got a full shell and working forwards before.
func TestAuthorizedKeyOptions(t *testing.T) {
	needTools(t, "ssh", "ssh-keygen", "scp")
	t.Parallel()
	dir := t.TempDir()
	echo := sessiontest.EchoServer(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	other := sessiontest.EchoServer(t)
	keys := map[string]string{}
	lines := []struct{ name, opts string }{
		{"id_ed25519", ""},
		{"forced", `command="echo forced orig=[$SSH_ORIGINAL_COMMAND]",no-pty`},
		{"nofwd", `no-port-forwarding`},
		{"permit", `permitopen="127.0.0.1:` + echoPort + `"`},
		{"from", `from="10.9.9.9"`},
		{"fromneg", `from="127.0.0.0/8,!127.0.0.1"`},
		{"expired", `expiry-time="20200101"`},
		{"unsupported", `tunnel="0"`},
		{"restricted", `from="127.0.0.1",command="echo restricted",restrict,no-port-forwarding,no-pty`},
	}
	var ak strings.Builder
	for _, l := range lines {
		keys[l.name] = userKey(t, dir, l.name)
		if l.opts != "" {
			ak.WriteString(l.opts + " ")
		}
		ak.WriteString(pubKey(t, keys[l.name]) + "\n")
	}
	s := startTrustDev(t, dir, ak.String(), "")

	t.Run("forced command", func(t *testing.T) {
		out, errOut, code := s.runAs(t, keys["forced"], s.user, "", "--", "whoami")
		if code != 0 || out != "forced orig=[whoami]\n" {
			t.Errorf("got %q (stderr %q, code %d)", out, errOut, code)
		}
		out, _, _ = s.runAs(t, keys["forced"], s.user, "", "--", "become", "mytool", "id")
		if out != "forced orig=[become mytool id]\n" {
			t.Errorf("become: %q", out)
		}
		// A shell gets the forced command too (no SSH_ORIGINAL_COMMAND).
		out, _, _ = s.runAs(t, keys["forced"], s.user, "exit\n", "-T")
		if out != "forced orig=[]\n" {
			t.Errorf("shell: %q", out)
		}
	})
	t.Run("no-pty", func(t *testing.T) {
		// ssh -tt gives up when the pty it insisted on is refused.
		out, errOut, code := s.runAs(t, keys["forced"], s.user, "", "-tt", "-o", "LogLevel=INFO", "--", "tty")
		if !strings.Contains(errOut, "PTY allocation request failed") || code == 0 || out != "" {
			t.Errorf("code %d stdout %q stderr %q", code, out, errOut)
		}
	})
	t.Run("scp replaced", func(t *testing.T) {
		src := filepath.Join(dir, "src.txt")
		os.WriteFile(src, []byte("data\n"), 0o600)
		dst := filepath.Join(dir, "scp-dst.txt")
		args := append([]string{"-O"}, s.sshOptsKey(keys["forced"])...)
		args = append(args, "-P", s.port, src, s.user+"@127.0.0.1:"+dst)
		out, err := exec.Command("scp", args...).CombinedOutput()
		if err == nil {
			t.Errorf("scp with a forced-command key succeeded: %s", out)
		}
		if _, err := os.Stat(dst); err == nil {
			t.Error("scp wrote the file despite the forced command")
		}
	})
	for _, k := range []string{"nofwd", "restricted"} {
		t.Run("no-port-forwarding -W "+k, func(t *testing.T) {
			out, errOut, code := s.runAs(t, keys[k], s.user, "x\n", "-o", "LogLevel=INFO", "-W", echo)
			if code == 0 || out != "" || !strings.Contains(errOut, "administratively prohibited") {
				t.Errorf("-W with %s: code %d out %q err %q", k, code, out, errOut)
			}
		})
	}
	t.Run("no-port-forwarding -L", func(t *testing.T) {
		forwardRefused(t, s, keys["nofwd"], echo)
	})
	t.Run("permitopen", func(t *testing.T) {
		out, errOut, code := s.runAs(t, keys["permit"], s.user, "x\n", "-W", echo)
		if code != 0 || out != "x\n" {
			t.Errorf("permitted -W: code %d out %q err %q", code, out, errOut)
		}
		out, errOut, code = s.runAs(t, keys["permit"], s.user, "x\n", "-o", "LogLevel=INFO", "-W", other)
		if code == 0 || out != "" || !strings.Contains(errOut, "administratively prohibited") {
			t.Errorf("other destination: code %d out %q err %q", code, out, errOut)
		}
	})
	for _, k := range []string{"from", "fromneg", "expired", "unsupported"} {
		t.Run("refused "+k, func(t *testing.T) {
			out, errOut, code := s.runAs(t, keys[k], s.user, "", "--", "echo in")
			if code != 255 || out != "" || !strings.Contains(errOut, "Permission denied (publickey)") {
				t.Errorf("%s: code %d out %q err %q", k, code, out, errOut)
			}
		})
	}
	t.Run("restrict", func(t *testing.T) {
		out, _, code := s.runAs(t, keys["restricted"], s.user, "", "--", "id")
		if code != 0 || out != "restricted\n" {
			t.Errorf("code %d out %q", code, out)
		}
		_, errOut, code := s.runAs(t, keys["restricted"], s.user, "", "-tt", "-o", "LogLevel=INFO", "--", "id")
		if code == 0 || !strings.Contains(errOut, "PTY allocation request failed") {
			t.Errorf("-tt: code %d err %q", code, errOut)
		}
	})
	logs := s.logs()
	for _, want := range []string{
		`"restrictions":["command","no-pty"]`,
		`"original_command":"whoami"`,
		`not valid from 127.0.0.1`,
		`key expired at`,
		`option bastion does not implement`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if n := strings.Count(logs, "option bastion does not implement"); n != 1 {
		t.Errorf("the unsupported key was logged %d times, want once", n)
	}
	if t.Failed() {
		t.Logf("bastion log:\n%s", logs)
	}
}

// forwardRefused checks that ssh -L with key opens the local port but
// every connection through it is refused by the server.
func forwardRefused(t *testing.T, s *server, key, dest string) {
	t.Helper()
	lport := freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"-o", "LogLevel=INFO"}, s.sshOptsKey(key)...)
	args = append(args, "-N", "-p", s.port, "-L", "127.0.0.1:"+lport+":"+dest, s.user+"@127.0.0.1")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stderr safeBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	var c net.Conn
	waitFor(t, "the forwarded port", 10*time.Second, func() bool {
		var err error
		c, err = net.Dial("tcp", "127.0.0.1:"+lport)
		return err == nil
	})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("x\n"))
	n, err := c.Read(make([]byte, 2))
	c.Close()
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("forward through -L: read %d bytes, err %v", n, err)
	}
	waitFor(t, "administratively prohibited", 5*time.Second, func() bool {
		return strings.Contains(stderr.String(), "administratively prohibited")
	})
}

type safeBuffer struct {
	mu  chan struct{}
	buf strings.Builder
}

func (b *safeBuffer) lock() {
	if b.mu == nil {
		b.mu = make(chan struct{}, 1)
	}
	b.mu <- struct{}{}
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.lock()
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.lock()
	defer func() { <-b.mu }()
	return b.buf.String()
}

// TestUserCertificates logs in with certificates made by the real
// ssh-keygen -s, and revokes them with a KRL made by ssh-keygen -k,
// which bastion re-reads when it changes.
func TestUserCertificates(t *testing.T) {
	needTools(t, "ssh", "ssh-keygen")
	t.Parallel()
	dir := t.TempDir()
	userKey(t, dir, "id_ed25519")
	ca := userKey(t, dir, "ca")
	ca2 := userKey(t, dir, "ca2")
	me := currentUser(t)
	cert := func(name string, args ...string) string {
		k := userKey(t, dir, name)
		keygen(t, append(append([]string{"-q", "-s", ca, "-I", name + "@test"}, args...), k+".pub")...)
		return k
	}
	valid := cert("valid", "-n", me, "-z", "1")
	expired := cert("expired", "-n", me, "-V", "20200101:20200102", "-z", "2")
	wrongPrincipal := cert("wrongp", "-n", "someoneelse", "-z", "3")
	forced := cert("forced", "-n", me, "-O", "force-command=echo cert-forced [$SSH_ORIGINAL_COMMAND]", "-z", "4")
	srcOK := cert("srcok", "-n", me, "-O", "source-address=127.0.0.1/32", "-z", "5")
	srcBad := cert("srcbad", "-n", me, "-O", "source-address=10.0.0.0/8", "-z", "6")
	revoked := cert("revoked", "-n", me, "-z", "7")
	later := cert("later", "-n", me, "-z", "8")
	nopty := cert("nopty", "-n", me, "-O", "clear", "-z", "9")
	byCA2 := userKey(t, dir, "byca2")
	keygen(t, "-q", "-s", ca2, "-I", "ca2@test", "-n", me, "-z", "10", byCA2+".pub")

	caFile := filepath.Join(dir, "user_ca.pub")
	os.WriteFile(caFile, []byte(pubKey(t, ca)+"\n"), 0o600)
	krl := filepath.Join(dir, "revoked.krl")
	keygen(t, "-k", "-f", krl, revoked+"-cert.pub")
	s := startTrustDev(t, dir, pubKey(t, filepath.Join(dir, "id_ed25519"))+"\n",
		"ssh:\n  trusted_user_ca_keys: ["+caFile+"]\n  revoked_keys: "+krl+"\n")

	login := func(t *testing.T, key, user string, args ...string) (string, string, int) {
		t.Helper()
		return s.runAs(t, key, user, "", args...)
	}
	for _, tt := range []struct {
		name, key, user string
		args            []string
		wantOut         string
		denied          bool
	}{
		// The refusals whose reasons the log must show come first: past
		// ten failures a minute from one address, sshd summarises them.
		{name: "revoked by KRL", key: revoked, user: me, denied: true},
		{name: "other CA", key: byCA2, user: me, denied: true},
		{name: "valid", key: valid, user: me, args: []string{"--", "echo ok"}, wantOut: "ok\n"},
		{name: "expired", key: expired, user: me, denied: true},
		{name: "wrong principal", key: wrongPrincipal, user: me, denied: true},
		{name: "force-command", key: forced, user: me, args: []string{"--", "id"}, wantOut: "cert-forced [id]\n"},
		{name: "source-address allows", key: srcOK, user: me, args: []string{"--", "echo ok"}, wantOut: "ok\n"},
		{name: "source-address refuses", key: srcBad, user: me, denied: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if args == nil {
				args = []string{"--", "echo in"}
			}
			out, errOut, code := login(t, tt.key, tt.user, args...)
			if tt.denied {
				if code != 255 || out != "" || !strings.Contains(errOut, "Permission denied (publickey)") {
					t.Errorf("code %d out %q err %q", code, out, errOut)
				}
				return
			}
			if code != 0 || out != tt.wantOut {
				t.Errorf("code %d out %q err %q", code, out, errOut)
			}
		})
	}
	t.Run("no permit-pty", func(t *testing.T) {
		out, errOut, code := login(t, nopty, me, "-tt", "-o", "LogLevel=INFO", "--", "echo ok")
		if !strings.Contains(errOut, "PTY allocation request failed") || code == 0 {
			t.Errorf("-tt: code %d out %q err %q", code, out, errOut)
		}
		if out, _, code := login(t, nopty, me, "--", "echo ok"); code != 0 || out != "ok\n" {
			t.Errorf("without a pty: code %d out %q", code, out)
		}
		_, errOut, code = s.runAs(t, nopty, me, "x\n", "-o", "LogLevel=INFO", "-W", sessiontest.EchoServer(t))
		if code == 0 || !strings.Contains(errOut, "administratively prohibited") {
			t.Errorf("-W without permit-port-forwarding: code %d err %q", code, errOut)
		}
	})
	logs := s.logs()
	for _, want := range []string{`"cert_id":"valid@test"`, `"cert_serial":1,`, `certificate serial 7 is revoked`, `is not trusted`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}

	// Revoke another certificate and trust the second CA: both files are
	// re-read when they change, without a restart.
	n := strings.Count(s.logs(), "config reloaded")
	keygen(t, "-k", "-u", "-f", krl, later+"-cert.pub")
	os.WriteFile(caFile, []byte(pubKey(t, ca)+"\n"+pubKey(t, ca2)+"\n"), 0o600)
	waitFor(t, "a reload", 15*time.Second, func() bool { return strings.Count(s.logs(), "config reloaded") > n })
	if _, errOut, code := login(t, later, me, "--", "echo in"); code != 255 {
		t.Errorf("certificate revoked after start still logs in: %d %q", code, errOut)
	}
	if out, errOut, code := login(t, byCA2, me, "--", "echo ok"); code != 0 || out != "ok\n" {
		t.Errorf("CA added after start: code %d out %q err %q", code, out, errOut)
	}
	if t.Failed() {
		t.Logf("bastion log:\n%s", s.logs())
	}
}

func currentUser(t testing.TB) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// TestToolLoginsAtAuthentication: alice+othertool (not a maintainer)
// and alice+nosuchtool are refused like a wrong key, and an allowed
// alice+mytool forwards as mytool.
func TestToolLoginsAtAuthentication(t *testing.T) {
	needTools(t, "ssh", "ssh-keygen")
	t.Parallel()
	dir := t.TempDir()
	key := userKey(t, dir, "id_ed25519")
	other := userKey(t, dir, "other")
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(dir, "users.yaml")
	os.WriteFile(users, []byte(fmt.Sprintf(`users:
  - name: %s
    uid: %s
    gid: %s
    home: %s
    shell: /bin/sh
    groups: [tools.mytool]
    key_files: [%s]
tools:
  - {name: mytool, uid: %s, gid: %s, home: %s, shell: /bin/sh}
  - {name: othertool, uid: %s, gid: %s, home: %s, shell: /bin/sh}
`, u.Username, u.Uid, u.Gid, dir, key+".pub", u.Uid, u.Gid, dir, u.Uid, u.Gid, dir)), 0o600)
	echo := sessiontest.EchoServer(t)
	s := startTrustDev(t, dir, "", "directory:\n  type: static\n  file: "+users+"\n")

	_, wrongKey, code := s.runAs(t, other, s.user, "", "--", "echo in")
	if code != 255 {
		t.Fatalf("wrong key got in")
	}
	for _, login := range []string{s.user + "+othertool", s.user + "+nosuchtool"} {
		out, errOut, code := s.runAs(t, key, login, "x\n", "-W", echo)
		errOut = strings.ReplaceAll(errOut, login+"@", s.user+"@")
		if code != 255 || out != "" || errOut != wrongKey {
			t.Errorf("%s: code %d out %q stderr %q, want the wrong-key refusal %q", login, code, out, errOut, wrongKey)
		}
	}
	out, errOut, code := s.runAs(t, key, s.user+"+mytool", "", "--", "echo $USER")
	if code != 0 || out != "mytool\n" {
		t.Errorf("alice+mytool: code %d out %q err %q", code, out, errOut)
	}
	out, errOut, code = s.runAs(t, key, s.user+"+mytool", "x\n", "-W", echo)
	if code != 0 || out != "x\n" {
		t.Errorf("-W as mytool: code %d out %q err %q", code, out, errOut)
	}
	logs := s.logs()
	for _, want := range []string{
		s.user + ` may not act as tool othertool`,
		`tool nosuchtool: not found`,
		`"event":"forward.open","conn":`,
		`"account":"mytool","destination":"` + echo + `"`,
		`"tool":"mytool"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if strings.Contains(logs, `"account":"othertool"`) || strings.Contains(logs, `"account":"nosuchtool"`) {
		t.Error("a refused tool login got an account in the audit log")
	}
	if t.Failed() {
		t.Logf("bastion log:\n%s", logs)
	}
}

package sshd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/internal/become"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/local"
)

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "become" {
		// The fixture's shells run this binary as their become command.
		os.Exit(become.Main(os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

// testDir is an in-memory directory with one user.
type testDir struct {
	users map[string]*auth.User
	tools map[string]*auth.Account
	err   error
}

func (d *testDir) LookupUser(_ context.Context, name string) (*auth.User, error) {
	if d.err != nil {
		return nil, d.err
	}
	u, ok := d.users[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, auth.ErrNotFound)
	}
	return u, nil
}

func (d *testDir) LookupTool(_ context.Context, name string) (*auth.Account, error) {
	a, ok := d.tools[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, auth.ErrNotFound)
	}
	return a, nil
}

type fixture struct {
	backend *local.Backend
	srv     *Server
	addr    string
	signer  ssh.Signer
	user    string
	dir     *testDir
	logs    *syncBuf
	audit   *syncBuf
	cancel  context.CancelFunc
	done    chan error

	stopOnce sync.Once
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newFixture(t testing.TB, mutate func(*Settings)) *fixture {
	t.Helper()
	return newFixtureWith(t, fixtureOpts{mutate: mutate})
}

// fixtureOpts are the seams of a fixture beyond its settings; each is
// applied before the server starts.
type fixtureOpts struct {
	mutate func(*Settings)
	// keys replaces the user's authorized keys; pub is the fixture's key.
	keys func(pub ssh.PublicKey) []auth.AuthorizedKey
	// wrap wraps the local backend (e.g. to record Dial calls).
	wrap  func(session.Backend) session.Backend
	audit *syncBuf
}

func newFixtureWith(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	mutate := o.mutate
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(me.Uid)
	gid, _ := strconv.Atoi(me.Gid)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	home := t.TempDir()
	dir := &testDir{
		users: map[string]*auth.User{me.Username: {
			Account: auth.Account{Name: me.Username, UID: uid, GID: gid, Home: home, Shell: "/bin/sh"},
			Keys:    []auth.AuthorizedKey{{Key: signer.PublicKey(), Source: "test"}},
			Tools:   []string{"mytool"},
		}},
		tools: map[string]*auth.Account{
			"mytool":  {Name: "tools.mytool", UID: uid, GID: gid, Home: home, Shell: "/bin/sh"},
			"othertl": {Name: "tools.othertl", UID: uid, GID: gid, Home: home, Shell: "/bin/sh"},
		},
	}
	cfg := config.Default()
	st := Settings{SSH: cfg.SSH, Limits: cfg.Limits, Forwarding: cfg.Forwarding, HostKeys: HostKeys{signers: []ssh.Signer{hostSigner}}}
	st.Limits.KeepaliveInterval = 0
	st.Limits.Penalties.Enabled = false // penalty_test.go turns them on
	if mutate != nil {
		mutate(&st)
	}
	logs := &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	backend := local.New(log)
	if o.keys != nil {
		dir.users[me.Username].Keys = o.keys(signer.PublicKey())
	}
	deps := Deps{Directory: dir, Backend: backend}
	if o.wrap != nil {
		deps.Backend = o.wrap(backend)
	}
	auditBuf := o.audit
	if auditBuf == nil {
		auditBuf = &syncBuf{}
	}
	deps.Audit = audit.New(auditBuf, log)
	srv, err := New(st, deps, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{backend: backend, srv: srv, addr: ln.Addr().String(), signer: signer, user: me.Username, dir: dir, logs: logs, audit: auditBuf, cancel: cancel, done: make(chan error, 1)}
	go pprof.Do(ctx, pprof.Labels("fixture", t.Name()), func(ctx context.Context) { f.done <- srv.Serve(ctx, ln) })
	t.Cleanup(f.stop)
	return f
}

func (f *fixture) stop() {
	f.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = f.srv.Shutdown(ctx)
		<-f.done
		f.backend.Close()
		f.cancel()
	})
}

func (f *fixture) dial(t testing.TB, user string) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(f.signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatalf("dial: %v\nlogs:\n%s", err, f.logs.String())
	}
	return c
}

func TestExecAndExitStatus(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t, f.user)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("echo hello; exit 4")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 4 || string(out) != "hello\n" {
		t.Fatalf("out %q err %v", out, err)
	}
}

func TestBecome(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		login, cmd string
		wantOut    string
		wantErr    string
		wantCode   int
	}{
		{f.user, "become mytool echo '$USER'", "", "", 0},
		{f.user, "become othertl id", "", "is not a maintainer of tool othertl", 1},
		{f.user, "become nosuch id", "", "nosuch: no such tool", 1},
		{f.user, "become", "", "usage: become TOOL", 1},
		{f.user + "+mytool", "echo $USER", "tools.mytool\n", "", 0},
		{f.user + "+mytool", "become mytool true", "", "already logged in as tool mytool", 1},
	}
	for _, tt := range tests {
		c := f.dial(t, tt.login)
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		s.Stdout, s.Stderr = &out, &errb
		err = s.Run(tt.cmd)
		code := 0
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitStatus()
		} else if err != nil {
			t.Fatalf("%s %q: %v", tt.login, tt.cmd, err)
		}
		if code != tt.wantCode || (tt.wantOut != "" && out.String() != tt.wantOut) || !strings.Contains(errb.String(), tt.wantErr) {
			t.Errorf("%s %q: code %d out %q err %q", tt.login, tt.cmd, code, out.String(), errb.String())
		}
		if tt.wantErr != "" && strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 {
			t.Errorf("%s %q: want one line, got %q", tt.login, tt.cmd, errb.String())
		}
		c.Close()
	}
}

func TestDirectoryUnavailableMessage(t *testing.T) {
	f := newFixture(t, nil)
	f.dir.err = fmt.Errorf("all servers down: %w", auth.ErrUnavailable)
	var banner string
	_, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{
		User: f.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(f.signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		BannerCallback:  func(m string) error { banner = m; return nil },
	})
	if err == nil || !strings.Contains(banner, "directory unavailable, try again") {
		t.Fatalf("err %v banner %q", err, banner)
	}
}

// Hostile clients must not crash the server, leak goroutines (goleak in
// TestMain) or disturb other users.
func TestHostileClients(t *testing.T) {
	f := newFixture(t, func(s *Settings) { s.Limits.LoginGraceTime = time.Second })

	t.Run("garbage", func(t *testing.T) {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write(bytes.Repeat([]byte("\x00\xffGET / HTTP/1.1\r\n"), 1000))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(io.Discard, c)
		if isTimeout(err) {
			t.Fatal("server kept a garbage connection open")
		}
	})
	t.Run("stops mid-handshake", func(t *testing.T) {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("SSH-2.0-stall\r\n"))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		_, err = io.Copy(io.Discard, c)
		if isTimeout(err) || time.Since(start) > 5*time.Second {
			t.Fatalf("stalled handshake not cut by login_grace_time (err %v after %s)", err, time.Since(start))
		}
	})
	t.Run("1000 channels", func(t *testing.T) {
		c := f.dial(t, f.user)
		defer c.Close()
		var opened, refused int
		var chans []ssh.Channel
		for i := 0; i < 1000; i++ {
			ch, reqs, err := c.OpenChannel("session", nil)
			if err != nil {
				refused++
				continue
			}
			go ssh.DiscardRequests(reqs)
			chans = append(chans, ch)
			opened++
		}
		if opened > config.Default().Limits.MaxSessionsPerConn || refused == 0 {
			t.Fatalf("opened %d, refused %d", opened, refused)
		}
		for _, ch := range chans {
			ch.Close()
		}
		// Another user's session still works.
		other := f.dial(t, f.user)
		defer other.Close()
		s, err := other.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if out, err := s.Output("echo ok"); err != nil || string(out) != "ok\n" {
			t.Fatalf("other session: %q %v", out, err)
		}
	})
	t.Run("window-change without pty", func(t *testing.T) {
		c := f.dial(t, f.user)
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		ok, err := s.SendRequest("window-change", true, ssh.Marshal(struct{ C, R, W, H uint32 }{80, 24, 0, 0}))
		if err != nil || ok {
			t.Fatalf("window-change without pty: ok %v err %v; want refused", ok, err)
		}
		ok, err = s.SendRequest("pty-req", true, []byte{0, 0, 0}) // truncated
		if err != nil || ok {
			t.Fatalf("truncated pty-req: ok %v err %v; want refused", ok, err)
		}
		if out, err := s.Output("echo still"); err != nil || string(out) != "still\n" {
			t.Fatalf("session after bad requests: %q %v", out, err)
		}
	})
	t.Run("unknown channel type", func(t *testing.T) {
		c := f.dial(t, f.user)
		defer c.Close()
		_, _, err := c.OpenChannel("x11", nil)
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason != ssh.UnknownChannelType {
			t.Fatalf("x11 channel: %v", err)
		}
	})
}

func TestUnauthenticatedCap(t *testing.T) {
	f := newFixture(t, func(s *Settings) {
		s.Limits.MaxStartups = config.Startups{Begin: 2, Rate: 100, Full: 2}
		s.Limits.LoginGraceTime = 5 * time.Second
	})
	var stalled []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		stalled = append(stalled, c)
	}
	// Wait until both count as unauthenticated.
	deadline := time.Now().Add(5 * time.Second)
	for f.srv.ActiveConns() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectRefused(t, c, "third unauthenticated connection")
	if !strings.Contains(f.logs.String(), "reason=max_startups") {
		t.Errorf("no max_startups log line")
	}
	for _, s := range stalled {
		s.Close()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// expectRefused reads what a refused connection gets: OpenSSH's one line
// and the end of the stream.
func expectRefused(t testing.TB, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if string(b) != refusedBanner || err != nil {
		t.Fatalf("%s: read %q, %v; want %q and the connection closed", what, b, err, refusedBanner)
	}
}

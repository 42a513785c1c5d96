package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/internal/hostile"
)

// Issue 11 against the real binary: the abuse the issue reports, and
// the defects it names, each with the client that shows it.

// Item 5: two sources each holding many silent connections and a third
// failing authentication again and again do not keep a fourth address
// out: at least 95 % of its logins succeed, with the default limits.
func TestPreAuthFairness(t *testing.T) {
	needTools(t, "ssh")
	// No exemption (dev exempts 127.0.0.1 unless the config names its
	// own): the defaults as a server has them.
	s := startDev(t, "ops:\n  listen: 127.0.0.1:0\nlimits:\n  penalties:\n    exempt: []\n")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	hold := func(from string) {
		d := hostile.Dialer{Addr: s.addr, From: from, Timeout: 5 * time.Second}
		for ctx.Err() == nil {
			c, err := d.Silent()
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			stop := context.AfterFunc(ctx, func() { c.Close() })
			_, _ = io.Copy(io.Discard, c) // until the server closes it
			stop()
			c.Close()
			time.Sleep(100 * time.Millisecond) // reconnect at once, but leave the CPU to the logins
		}
	}
	for _, from := range []string{"127.0.0.2", "127.0.0.3"} {
		for i := 0; i < 50; i++ { // max_conns_per_source each, as in the issue
			wg.Add(1)
			go func() { defer wg.Done(); hold(from) }()
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		d := hostile.Dialer{Addr: s.addr, From: "127.0.0.4", Timeout: 5 * time.Second}
		for ctx.Err() == nil {
			_ = d.FailAuth(s.user, 1)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(2 * time.Second) // let the abuse fill what it can

	const logins = 40
	ok := 0
	var failures []string
	for i := 0; i < logins; i++ {
		out, errOut, code := s.run(t, "", "--", "echo in")
		if code == 0 && out == "in\n" {
			ok++
		} else {
			failures = append(failures, fmt.Sprintf("code %d: %s", code, strings.TrimSpace(errOut)))
		}
	}
	body := ""
	_, body = httpGet(t, s.opsURL(t)+"/metrics")
	cancel()
	wg.Wait()
	t.Logf("%d of %d logins succeeded under abuse", ok, logins)
	if ok*100 < logins*95 {
		t.Fatalf("%d of %d logins succeeded (< 95 %%); failures:\n%s", ok, logins, strings.Join(failures, "\n"))
	}
	for _, want := range []struct{ name, label string }{
		{"bastion_connections_rejected_total", `reason="per_source_max_startups"`},
		{"bastion_connections_rejected_total", `reason="penalty"`},
		{"bastion_penalties_total", `reason="auth_failure"`},
	} {
		if v := metricValue(t, body, want.name, want.label); v <= 0 {
			t.Errorf("%s{%s} = %v, want > 0", want.name, want.label, v)
		}
	}
	if v := metricValue(t, body, "bastion_penalised_sources"); v < 1 {
		t.Errorf("bastion_penalised_sources = %v, want the failing source", v)
	}
}

// Item 6: a descriptor open when bastion starts (here a root-only file
// on fd 7) does not reach a session.
func TestInheritedDescriptorsClosed(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(secret, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	s := startDevCmd(t, "", func(c *exec.Cmd) {
		c.ExtraFiles = []*os.File{devnull, devnull, devnull, devnull, f} // fds 3-6, and 7
	})
	// The shell's own descriptors (ls runs as a child; the sleep keeps
	// bash from exec'ing it in place).
	out, errOut, code := s.run(t, "", "--", "ls -l /proc/$$/fd; (echo written >/proc/$$/fd/7) 2>/dev/null && echo wrote-7; sleep 0.1")
	if code != 0 {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	if strings.Contains(out, secret) || strings.Contains(out, "wrote-7") {
		t.Fatalf("an inherited descriptor reached the session:\n%s", out)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[len(f)-2] != "->" {
			continue
		}
		n++
		if fd := f[len(f)-3]; fd != "0" && fd != "1" && fd != "2" {
			t.Errorf("session has descriptor %s", line)
		}
	}
	if n != 3 {
		t.Errorf("want descriptors 0, 1, 2 in:\n%s", out)
	}
	if b, _ := os.ReadFile(secret); string(b) != "secret\n" {
		t.Fatalf("secret file changed: %q", b)
	}
}

// Item 7: a client that does not read (ssh host yes | sleep) cannot keep
// bastion from stopping: shutdown_grace is honoured.
func TestDrainWithClientNotReading(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "limits:\n  shutdown_grace: 2s\n")
	stuck := stuckClient(t, s)
	defer stuck()
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("bastion still running 20 s after SIGTERM with shutdown_grace 2s\n%s", s.logs())
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("stopped after %s, before the grace period", d)
	}
	t.Logf("stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
}

// Item 7: a second SIGTERM exits at once, whatever the grace period.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "limits:\n  shutdown_grace: 5m\n")
	stuck := stuckClient(t, s)
	defer stuck()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, "the drain", 10*time.Second, func() bool { return strings.Contains(s.logs(), "shutting down") })
	start := time.Now()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("bastion still running 5 s after a second SIGTERM\n%s", s.logs())
	}
	t.Logf("exited %s after the second SIGTERM", time.Since(start).Round(time.Millisecond))
}

// stuckClient runs `ssh host yes` whose output nobody reads, and waits
// until bastion has filled the window.
func stuckClient(t *testing.T, s *server) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "ssh", append(s.sshOpts(), "-p", s.port, s.user+"@127.0.0.1", "yes")...)
	if _, err := cmd.StdoutPipe(); err != nil { // never read
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session", 15*time.Second, func() bool { return strings.Contains(s.logs(), "session start") })
	time.Sleep(time.Second) // 64 KB of pipe and 2 MB of window fill in well under that
	return func() { cancel(); _ = cmd.Wait() }
}

// Item 9: OpenSSH's client, offering more keys than max_auth_tries,
// reads the disconnect message (reason 2).
func TestTooManyAuthFailuresMessage(t *testing.T) {
	needTools(t, "ssh", "ssh-keygen")
	t.Parallel()
	s := startDev(t, "")
	dir := t.TempDir()
	var args []string
	for i := 0; i < 7; i++ {
		args = append(args, "-i", userKey(t, dir, fmt.Sprintf("k%d", i)))
	}
	args = append(args, "-o", "LogLevel=INFO", "--", "true")
	_, errOut, code := s.runAs(t, args[1], s.user, "", args[2:]...)
	if code != 255 || !strings.Contains(strings.ToLower(errOut), "received disconnect") ||
		!strings.Contains(strings.ToLower(errOut), ":2: too many authentication failures") {
		t.Fatalf("7 wrong keys: code %d, stderr %q; want the disconnect message", code, errOut)
	}
}

// Item 8: writing a log file into the config's directory reloads
// nothing; changing the config reloads once.
func TestReloadOnContentChangeOnly(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "limits:\n  max_auth_tries: 6\n")
	cfgPath := filepath.Join(s.dir, "bastion.yaml")
	logf, err := os.OpenFile(filepath.Join(s.dir, "bastion.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	for i := 0; i < 40; i++ {
		fmt.Fprintf(logf, "line %d\n", i)
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	if n := countLog(s, "config reloaded") + countLog(s, "reload rejected") + countLog(s, "nothing to reload"); n != 0 {
		t.Fatalf("%d reloads from a log file written beside the config:\n%s", n, s.logs())
	}
	if err := os.WriteFile(cfgPath, []byte("limits:\n  max_auth_tries: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload", 10*time.Second, func() bool {
		return countLog(s, "config reloaded")+countLog(s, "reload rejected") >= 1
	})
	time.Sleep(time.Second)
	if n := countLog(s, "config reloaded") + countLog(s, "reload rejected"); n != 1 {
		t.Fatalf("%d reloads for one change:\n%s", n, s.logs())
	}
}

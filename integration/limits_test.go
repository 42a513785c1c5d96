package integration

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// bg runs ssh in the background and returns a function that waits for it.
func (s *server) bg(t *testing.T, args ...string) (wait func() (string, int), cancel func()) {
	t.Helper()
	ctx, cancelCtx := context.WithTimeout(context.Background(), 90*time.Second)
	all := append(s.sshOpts(), "-p", s.port, s.user+"@127.0.0.1")
	all = append(all, args...)
	cmd := exec.CommandContext(ctx, "ssh", all...)
	var out bytes.Buffer
	var mu sync.Mutex
	cmd.Stdout = &lockedWriter{mu: &mu, w: &out}
	cmd.Stderr = &lockedWriter{mu: &mu, w: &out}
	stdin, _ := cmd.StdinPipe() // keep stdin open, like a terminal
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	var code int
	wait = func() (string, int) {
		once.Do(func() {
			err := cmd.Wait()
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			stdin.Close()
		})
		mu.Lock()
		defer mu.Unlock()
		return out.String(), code
	}
	t.Cleanup(func() { cancelCtx(); wait() })
	return wait, cancelCtx
}

func countLog(s *server, substr string) int { return strings.Count(s.logs(), substr) }

func TestIdleTimeout(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "limits:\n  idle_timeout: 1s\n")
	start := time.Now()
	wait, _ := s.bg(t, "sleep 30")
	out, code := wait()
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("idle session lasted %s", d)
	}
	if code == 0 || !strings.Contains(out, "bastion: idle timeout") {
		t.Fatalf("code %d, output %q: want the idle timeout message", code, out)
	}
	// Activity keeps a session alive past the timeout.
	out2, _, code2 := s.run(t, "", "--", "for i in 1 2 3 4; do echo tick; sleep 0.5; done")
	if code2 != 0 || strings.Count(out2, "tick") != 4 {
		t.Fatalf("active session: code %d, out %q\n%s", code2, out2, s.logs())
	}
}

func TestMaxSessionDuration(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "limits:\n  max_session_duration: 1s\n")
	wait, _ := s.bg(t, "while sleep 0.2; do echo busy; done")
	out, code := wait()
	if code == 0 || !strings.Contains(out, "bastion: maximum session duration of 1s reached") {
		t.Fatalf("code %d, output %q", code, out)
	}
}

func TestSessionLimits(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "limits:\n  max_sessions_per_user: 2\n")
	var cancels []func()
	for i := 0; i < 2; i++ {
		_, cancel := s.bg(t, "sleep 60")
		cancels = append(cancels, cancel)
	}
	waitFor(t, "two sessions", 15*time.Second, func() bool { return countLog(s, "session start") >= 2 })
	_, errOut, code := s.run(t, "", "-o", "LogLevel=INFO", "--", "echo third")
	if code != 255 || !strings.Contains(errOut, "too many open sessions (limit 2)") {
		t.Fatalf("third session: code %d, stderr %q", code, errOut)
	}
	cancels[0]()
	waitFor(t, "a slot to free", 15*time.Second, func() bool {
		out, _, code := s.run(t, "", "--", "echo again")
		return code == 0 && out == "again\n"
	})
}

func TestSessionsPerConnection(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "limits:\n  max_sessions_per_conn: 1\n")
	sock := t.TempDir() + "/mux"
	// A master connection holding one session; a second session over
	// the same connection is refused.
	_, cancel := s.bg(t, "-o", "ControlMaster=yes", "-o", "ControlPath="+sock, "sleep 60")
	defer cancel()
	waitFor(t, "the first session", 15*time.Second, func() bool { return countLog(s, "session start") >= 1 })
	out, errOut, _ := s.run(t, "", "-o", "ControlPath="+sock, "-o", "ControlMaster=no", "--", "echo second")
	// The client then falls back to a connection of its own, so "second"
	// may still be printed; what matters is that the multiplexed open
	// was refused.
	_ = out
	if !strings.Contains(errOut, "Session open refused by peer") ||
		!strings.Contains(s.logs(), "reason=max_sessions_per_conn") {
		t.Fatalf("second session over one connection: stdout %q, stderr %q", out, errOut)
	}
}

func TestGracefulShutdown(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "limits:\n  shutdown_grace: 2s\n")
	wait, _ := s.bg(t, "sleep 60")
	waitFor(t, "the session", 15*time.Second, func() bool { return countLog(s, "session start") >= 1 })
	start := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	out, code := wait()
	if code == 0 || !strings.Contains(out, "bastion: the server is shutting down") {
		t.Fatalf("client: code %d, output %q", code, out)
	}
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		t.Fatal("bastion did not exit after the grace period")
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("bastion cut sessions after %s, before the 2s grace period", d)
	}
	if s.exit != nil {
		t.Errorf("bastion exit: %v\n%s", s.exit, s.logs())
	}
	// New connections are refused while draining / after exit.
	_, _, code = s.run(t, "", "--", "true")
	if code != 255 {
		t.Errorf("login after shutdown: code %d", code)
	}
}

func TestReloadKeepsConnections(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	echo := sessiontest.EchoServer(t)
	s := startDev(t, "forwarding:\n  allow: []\n")
	cfgPath := s.dir + "/bastion.yaml"

	// A live session that echoes its input.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", append(s.sshOpts(), "-p", s.port, s.user+"@127.0.0.1", "cat")...)
	in, _ := cmd.StdinPipe()
	outPipe, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	roundTrip := func(msg string) {
		t.Helper()
		if _, err := io.WriteString(in, msg+"\n"); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg)+1)
		if _, err := io.ReadFull(outPipe, buf); err != nil || string(buf) != msg+"\n" {
			t.Fatalf("live session: got %q, %v", buf, err)
		}
	}
	roundTrip("before")

	// A bad config is rejected; the old one stays.
	os.WriteFile(cfgPath, []byte("limits:\n  max_auth_tries: -1\nbogus: 1\n"), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the rejection", 10*time.Second, func() bool { return strings.Contains(s.logs(), "reload rejected") })
	roundTrip("after bad reload")

	// A good one is applied to new channels: forwarding to echo opens up.
	// Host keys must be named in a serve-style config, so reuse dev's.
	os.WriteFile(cfgPath, []byte("ssh:\n  listen: 127.0.0.1:"+s.port+"\n  host_keys: ["+
		s.dir+"/state/hostkeys/ssh_host_ed25519_key]\ndirectory:\n  file: "+s.dir+"/state/users.yaml\nforwarding:\n  allow: [\""+echo+"\"]\n"), 0o600)
	s.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "the reload", 10*time.Second, func() bool { return strings.Contains(s.logs(), "config reloaded") })
	roundTrip("after good reload")
	in.Close()

	lport := freePort(t)
	wait, stop := s.bg(t, "-N", "-L", "127.0.0.1:"+lport+":"+echo)
	defer stop()
	waitFor(t, "forward through reloaded policy", 10*time.Second, func() bool {
		c, err := dialEcho("127.0.0.1:" + lport)
		return err == nil && c
	})
	stop()
	wait()
}

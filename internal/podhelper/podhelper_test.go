package podhelper

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// The test binary doubles as the helper's `run` (in its own session, as
// the container runtime starts an exec).
const runEnv = "BASTION_PODHELPER_TEST_RUN"

func TestMain(m *testing.M) {
	if os.Getenv(runEnv) != "" {
		os.Exit(Run(os.Args[2:], os.Stderr))
	}
	os.Exit(m.Run())
}

// helperRun starts `run TOKEN args...` as a session leader.
func helperRun(t *testing.T, home, stdin string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"run"}, args...)...)
	cmd.Env = append(os.Environ(), runEnv+"=1", "HOME="+home)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestRun(t *testing.T) {
	home := t.TempDir()
	for _, c := range []struct {
		name, command, stdin string
		env                  []string
		code                 int
		out, status, ended   string
	}{
		{name: "env and cwd", command: `echo "$BASTION_SESSION|$FOO|$(pwd)|$BASTION_EXIT_TRAILER"; exit 7`, env: []string{"FOO=bar baz"}, code: 7,
			out: "TOKEN|bar baz|" + home + "|\n", status: NoRecord, ended: "exit 7"},
		{name: "login shell", command: "", stdin: "echo $0\n", code: 0, out: "-sh\n", status: Exited0, ended: "exit 0"},
		{name: "TERM", command: "kill -TERM $$", code: 143, status: "TERM 0", ended: "TERM 0"},
		{name: "KILL", command: "kill -KILL $$", code: 137, status: "KILL 0", ended: "KILL 0"},
		{name: "VTALRM", command: "kill -VTALRM $$", code: 154, status: "VTALRM 0", ended: "VTALRM 0"},
		{name: "exit 143 is not a signal", command: "exit 143", code: 143, status: NoRecord, ended: "exit 143"},
	} {
		for _, trailer := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/trailer=%v", c.name, trailer), func(t *testing.T) {
				token := fmt.Sprintf("tokrun%d", rand.IntN(1<<30))
				args := append([]string{token, "/bin/sh", c.command, "50"}, c.env...)
				if trailer {
					args = append(args, TrailerVar+"=1")
				}
				cmd, out := helperRun(t, home, c.stdin, args...)
				code := exitCode(cmd.Wait())
				want := strings.ReplaceAll(c.out, "TOKEN", token)
				if trailer {
					want += Trailer(token, c.ended)
				}
				if code != c.code {
					t.Errorf("exit %d, want %d (output %q)", code, c.code, out)
				}
				if got := out.String(); (c.out != "" || trailer) && got != want {
					t.Errorf("output %q, want %q", got, want)
				}
				status := c.status
				if trailer && status == Exited0 {
					status = Exited0Trailer
				}
				st, err := Status(token)
				if err != nil || st != status {
					t.Errorf("status %q (%v), want %q", st, err, status)
				}
				if st, _ := Status(token); st != status {
					t.Errorf("asked again: status %q, want %q again", st, status)
				}
				// Forgotten recordTTL after it was left.
				old := time.Now().Add(-recordTTL - time.Minute)
				_ = os.Chtimes(statusPath(token), old, old)
				if st, _ := Status(token); st != NoRecord {
					t.Errorf("status not forgotten after %s: %q", recordTTL, st)
				}
			})
		}
	}
}

// A record left by an earlier run with the same token, old enough to be
// forgotten, is replaced by this run's, not kept in its way (a test's
// fixed token then read "none" once the earlier record was 10 minutes
// old: the race and the plain pass of the README's test command).
func TestRunReplacesAStaleRecord(t *testing.T) {
	token := fmt.Sprintf("tokstale%d", rand.IntN(1<<30))
	old := time.Now().Add(-recordTTL - time.Minute)
	if err := os.WriteFile(statusPath(token), []byte("TERM 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(statusPath(token), old, old)
	t.Cleanup(func() { _ = os.Remove(statusPath(token)) })
	cmd, out := helperRun(t, t.TempDir(), "", token, "/bin/sh", "kill -HUP $$", "0")
	if code := exitCode(cmd.Wait()); code != 129 {
		t.Fatalf("exit %d, want 129 (output %q)", code, out)
	}
	if st, err := Status(token); err != nil || st != "HUP 0" {
		t.Errorf("status %q (%v), want HUP 0", st, err)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && strings.HasSuffix(string(b), "\n") {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err == nil {
				return pid
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no pid in %s", path)
	return 0
}

// TestHangup: a dropped session's processes get a hang-up; what ignores
// it (nohup) or left the session (setsid) lives on; what blocks it is
// killed after the grace period.
func TestHangup(t *testing.T) {
	if _, err := exec.LookPath("perl"); err != nil {
		t.Skip("perl is not installed (it blocks SIGHUP for the test)")
	}
	dir := t.TempDir()
	token := fmt.Sprintf("tokhangup%d", rand.IntN(1<<30)) // records outlive the test run
	script := `sleep 1000 & echo $! > plain
nohup sleep 1001 >/dev/null 2>&1 & echo $! > nohup
setsid sleep 1002 >/dev/null 2>&1 & echo $! > setsid
perl -MPOSIX -e 'sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGHUP)); sleep 1000' & echo $! > blocked
wait`
	cmd, out := helperRun(t, dir, "", token, "/bin/sh", script, "0")
	pid := map[string]int{}
	for _, name := range []string{"plain", "nohup", "setsid", "blocked"} {
		pid[name] = readPid(t, filepath.Join(dir, name))
	}
	t.Cleanup(func() {
		for _, p := range pid {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	})
	// Wait until nohup, setsid and perl have done their work (the
	// processes exec'd into sleep and perl with HUP ignored, in a new
	// session, and blocked).
	ready := func() bool {
		n, ok1 := readProc("/proc", pid["setsid"])
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid["blocked"]) + "/status")
		return ok1 && n.sid == n.pid && handlesHUP("/proc", pid["nohup"]) &&
			len(n.args) > 0 && n.args[0] == "sleep" && strings.Contains(string(b), "SigBlk:\t0000000000000001")
	}
	for deadline := time.Now().Add(20 * time.Second); !ready(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("nohup, setsid or perl did not get ready in 20s")
		}
	}
	start := time.Now()
	if err := Hangup(context.Background(), "/proc", token, time.Second); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if code := exitCode(err); code != 128+int(syscall.SIGHUP) {
			t.Errorf("run exited %d, want %d (the shell hung up); output %q", code, 128+int(syscall.SIGHUP), out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run still running after the hang-up")
	}
	time.Sleep(100 * time.Millisecond)
	for name, want := range map[string]bool{"plain": false, "nohup": true, "setsid": true, "blocked": false} {
		if got := alive(pid[name]); got != want {
			t.Errorf("%s (pid %d): alive %v, want %v", name, pid[name], got, want)
		}
	}
	if took < 900*time.Millisecond || took > 15*time.Second {
		t.Errorf("hangup took %s; want the 1s grace for the blocked process", took)
	}
	if st, _ := Status(token); st != "HUP 0" {
		t.Errorf("status %q, want HUP 0", st)
	}
}

// TestSignal: an SSH signal request reaches the session's shell (not
// the helper, which would only pass it on).
func TestSignal(t *testing.T) {
	dir := t.TempDir()
	token := fmt.Sprintf("toksignal%d", rand.IntN(1<<30))
	cmd, out := helperRun(t, dir, "", token, "/bin/sh", `trap 'echo got USR1; exit 3' USR1; echo $$ > ready; while :; do sleep 0.05; done`, "0")
	readPid(t, filepath.Join(dir, "ready"))
	if err := Signal("/proc", token, "USR1"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if code := exitCode(err); code != 3 || out.String() != "got USR1\n" {
			t.Errorf("exit %d output %q; want 3 and the trap's line", code, out)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the shell did not get USR1")
	}
	if err := Signal("/proc", token, "NOSUCH"); err == nil {
		t.Error("an unknown signal name was accepted")
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	if err := Install(dir); err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	want, _ := os.ReadFile(exe)
	got, err := os.ReadFile(filepath.Join(dir, "bastion-helper"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("installed copy differs (err %v)", err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "bastion-helper")); st.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", st.Mode().Perm())
	}
	if err := Install(filepath.Join(dir, "missing")); err == nil {
		t.Error("install into a missing directory succeeded")
	}
}

// TestRunOnTerminal: as a TTY exec in a pod (the helper leads a session
// whose controlling terminal is a pty), an interactive login bash gets
// the terminal (job control, ^C to its foreground job, not to the
// helper) and its exit status comes back.
func TestRunOnTerminal(t *testing.T) {
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("needs /bin/bash")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	cmd := exec.Command(exe, "run", "tokpty1", "/bin/bash", "", "0", TrailerVar+"=1")
	cmd.Env = append(os.Environ(), runEnv+"=1", "HOME="+home, "TERM=dumb", "PS1=$ ")
	ptmx, err := pty.Start(cmd) // a new session with the pty as its controlling terminal
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var out syncBuffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(&out, ptmx)
	}()
	waitOut := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !strings.Contains(out.String(), want); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q on the terminal; got %q", want, out.String())
			}
		}
	}
	_, _ = ptmx.Write([]byte("echo pgrp-$(( $(ps -o pgid= -p $$) == $$ ))\n"))
	waitOut("pgrp-1") // job control: bash leads its own process group
	_, _ = ptmx.Write([]byte("sleep 30\n"))
	time.Sleep(300 * time.Millisecond)
	_, _ = ptmx.Write([]byte{3}) // ^C: the sleep is interrupted, bash and the helper live
	_, _ = ptmx.Write([]byte("echo after-sleep-$?\n"))
	waitOut("after-sleep-130")
	_, _ = ptmx.Write([]byte("exit 5\n"))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if code := exitCode(err); code != 5 {
			t.Errorf("exit %d, want 5; terminal: %q", code, out.String())
		}
		// The trailer comes through the terminal unchanged, last.
		<-copied
		if want := Trailer("tokpty1", "exit 5"); !strings.HasSuffix(out.String(), want) {
			t.Errorf("terminal output does not end with the trailer %q: %q", want, out.String())
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("helper did not exit; terminal: %q", out.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Where run cannot leave a record, status knows nothing ("") rather than
// NoRecord, which bastion reads as a cut stream.
func TestStatusWithoutRecordDir(t *testing.T) {
	old := statusDir
	t.Cleanup(func() { statusDir = old })
	statusDir = filepath.Join(t.TempDir(), "missing")
	if st, err := Status("tokdir1"); err != nil || st != "" {
		t.Errorf("status %q (%v), want \"\"", st, err)
	}
	statusDir = t.TempDir()
	if st, err := Status("tokdir1"); err != nil || st != NoRecord {
		t.Errorf("status %q (%v), want %q", st, err, NoRecord)
	}
}

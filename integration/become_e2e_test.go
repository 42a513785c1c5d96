package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/bastion-ssh/bastion/integration/kubetest"
)

// lineTerm is an interactive OpenSSH session (ssh -tt) driven line by
// line, as a person types at a prompt.
type lineTerm struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	mu   sync.Mutex
	out  bytes.Buffer
	seen int // bytes of out consumed by expect
	done chan struct{}
	errb bytes.Buffer // under mu
}

// openLineTerm logs in with `ssh -tt` (a pty and a login shell).
func openLineTerm(t *testing.T, s *server, key, login string) *lineTerm {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	args := append([]string{"-tt"}, s.sshOptsKey(key)...)
	args = append(args, "-p", s.port, login+"@127.0.0.1")
	term := &lineTerm{t: t, done: make(chan struct{})}
	term.cmd = exec.CommandContext(ctx, "ssh", args...)
	term.cmd.Stderr = &lockedWriter{mu: &term.mu, w: &term.errb}
	var err error
	if term.in, err = term.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := term.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := term.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(term.done)
		b := make([]byte, 4096)
		for {
			n, err := out.Read(b)
			term.mu.Lock()
			term.out.Write(b[:n])
			term.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		term.in.Close()
		select {
		case <-term.done:
		case <-time.After(20 * time.Second):
		}
		cancel()
		_ = term.cmd.Wait()
	})
	return term
}

// typeLine sends a line as if typed.
func (term *lineTerm) typeLine(line string) {
	term.t.Helper()
	if _, err := io.WriteString(term.in, line+"\n"); err != nil {
		term.t.Fatalf("typing %q: %v", line, err)
	}
}

// expect waits for want in the output after the last match. Markers
// are computed by the shell ($((1+1))) so that the echo of the typed line
// does not match.
func (term *lineTerm) expect(want string) {
	term.t.Helper()
	term.expectWithin(want, 60*time.Second, true)
}

// typeUntil types line until want shows (at most five times, 3 s each):
// for a line typed just as a become command ends, which that command may
// still read and send to the tool's exiting shell (typeahead, as with ssh).
func (term *lineTerm) typeUntil(line, want string) {
	term.t.Helper()
	for i := 0; i < 4; i++ {
		term.typeLine(line)
		if term.expectWithin(want, 3*time.Second, false) {
			return
		}
	}
	term.typeLine(line)
	term.expect(want)
}

// expectWithin is expect with a deadline; without fatal it reports
// whether want showed instead of failing the test.
func (term *lineTerm) expectWithin(want string, d time.Duration, fatal bool) bool {
	term.t.Helper()
	deadline := time.Now().Add(d)
	for {
		term.mu.Lock()
		rest, errs := term.out.String()[term.seen:], term.errb.String()
		if i := strings.Index(rest, want); i >= 0 {
			term.seen += i + len(want)
			term.mu.Unlock()
			return true
		}
		term.mu.Unlock()
		select {
		case <-term.done:
			term.t.Fatalf("ssh ended before %q; output after the last match:\n%s\nstderr: %s", want, rest, errs)
		default:
		}
		if time.Now().After(deadline) {
			if !fatal {
				return false
			}
			term.t.Fatalf("no %q in the output after the last match:\n%s", want, rest)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait waits for ssh to end and returns its exit status.
func (term *lineTerm) wait() int {
	term.t.Helper()
	term.in.Close()
	select {
	case <-term.done:
	case <-time.After(30 * time.Second):
		term.t.Fatal("ssh did not end")
	}
	err := term.cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return 0
}

// auditLines returns the audit log's events (one JSON object per line).
func auditLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var evs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// TestBecomeInShell is issue 14's "become typed at the shell prompt" with
// the local backend: OpenSSH's client in a lineTerm, alice's login shell,
// `become mytool` lands in mytool's shell as mytool's uid, exit returns to
// alice's shell, a tool she does not maintain gets the SSH level's
// refusal, `become mytool CMD` runs one command, and the audit log has
// each with via=shell.
func TestBecomeInShell(t *testing.T) {
	t.Parallel()
	w := startLDAPWorld(t)
	term := openLineTerm(t, w.bast, w.key(t, "alice-1"), "alice")
	term.typeLine(`echo "me=$(id -u)"`)
	term.expect("me=5001")

	term.typeLine("become mytool")
	term.typeLine(`echo "who=$USER uid=$(id -u) home=$HOME tool=$BASTION_TOOL"; tty >/dev/null && echo "tty=$((1+1))"`)
	term.expect("who=tools.mytool uid=52001 home=" + w.homes + "/project/mytool tool=mytool")
	term.expect("tty=2")
	// A nested become is refused (the tool's shell has no socket).
	term.typeLine("become othertool; echo \"nested=$?\"")
	term.expect("become: you are already acting as tool mytool; exit to return to your own shell first")
	term.expect("nested=1")
	term.typeLine("exit 7")
	waitFor(t, "the become session's end in the log", 30*time.Second, func() bool {
		return strings.Contains(w.bast.logs(), "exit_status=7")
	})
	term.typeUntil(`echo "status=$? back=$USER uid=$(id -u)"`, "status=7 back=alice uid=5001")

	term.typeLine("become othertool")
	term.expect("become: alice is not a maintainer of tool othertool")
	term.typeLine("become nosuchtool")
	term.expect("become: nosuchtool: no such tool; check the name")
	term.typeLine(`become mytool 'echo "one=$USER:$(id -u)"'; echo "rc=$?"`)
	term.expect("one=tools.mytool:52001")
	term.expect("rc=0")
	term.typeLine(`become mytool 'kill -TERM $$'; echo "killed=$?"`)
	term.expect("Terminated")
	term.expect("killed=143")
	term.typeLine("exit")
	if code := term.wait(); code != 0 {
		t.Errorf("ssh exited %d", code)
	}

	w.bast.stop()
	var got []string
	for _, ev := range auditLines(t, filepath.Join(w.bast.dir, "audit.log")) {
		switch ev["event"] {
		case "become", "become.deny":
			got = append(got, strings.TrimSpace(auditStr(ev["event"])+" "+auditStr(ev["user"])+" "+auditStr(ev["account"])+auditStr(ev["tool"])+" via="+auditStr(ev["via"])+" "+auditStr(ev["reason"])))
		}
	}
	want := []string{
		"become alice tools.mytool via=shell",
		"become.deny alice othertool via=shell not a maintainer",
		"become.deny alice nosuchtool via=shell no such tool",
		"become alice tools.mytool via=shell",
		"become alice tools.mytool via=shell",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit log's become events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func auditStr(v any) string {
	s, _ := v.(string)
	return s
}

// podOf returns the name of the shell pod of account (bastion.io/account).
func (w *kubeWorld) podOf(t *testing.T, account string) string {
	t.Helper()
	for _, p := range w.pods(t) {
		if p.Annotations["bastion.io/account"] == account && p.DeletionTimestamp == nil {
			return p.Name
		}
	}
	t.Fatalf("no shell pod for %s", account)
	return ""
}

// TestKubeBecomeInShell is issue 14's "become typed at the shell prompt"
// on the real cluster: at the prompt of alice's shell in alice's pod,
// `become mytool` opens mytool's shell in mytool's pod as mytool's uid on
// the same terminal; exit returns to alice's pod; othertool is refused
// as at the SSH level; `become mytool CMD` runs in mytool's pod.
func TestKubeBecomeInShell(t *testing.T) {
	w := startKubeWorld(t, kubeOptions{podKeys: "    helper_image: " + kubetest.ShellImage + "\n"})
	term := openLineTerm(t, w.bast, w.key(t, "alice-1"), "alice")
	term.typeLine(`echo "me=$(id -u) host=$(cat /proc/sys/kernel/hostname) sock=${BASTION_BECOME_SOCK:+set}"`)
	term.expect("me=5001 host=")
	alicePod := w.podOf(t, "alice")
	term.expect(alicePod + " sock=set")

	term.typeLine("become mytool")
	term.typeLine(`echo "who=$USER uid=$(id -u) host=$(cat /proc/sys/kernel/hostname) tool=$BASTION_TOOL"`)
	term.expect("who=tools.mytool uid=52001 host=")
	toolPod := w.podOf(t, "tools.mytool")
	if toolPod == alicePod {
		t.Fatalf("mytool's shell ran in alice's pod %s", alicePod)
	}
	term.expect(toolPod + " tool=mytool")
	term.typeLine("exit 7")
	waitFor(t, "the become session's end in the log", 30*time.Second, func() bool {
		return strings.Contains(w.bast.logs(), "via=shell kind=become account=tools.mytool exit_status=7")
	})
	term.typeUntil(`echo "status=$? back=$USER uid=$(id -u) host=$(cat /proc/sys/kernel/hostname)"`, "status=7 back=alice uid=5001 host="+alicePod)

	term.typeLine("become othertool")
	term.expect("become: alice is not a maintainer of tool othertool")
	term.typeLine(`become mytool 'echo "one=$(id -u)@$(cat /proc/sys/kernel/hostname)"'; echo "rc=$?"`)
	term.expect("one=52001@" + toolPod)
	term.expect("rc=0")
	term.typeLine("exit")
	if code := term.wait(); code != 0 {
		t.Errorf("ssh exited %d", code)
	}
	// A second login finds alice's pod running: its socket costs the
	// prompt one exec (the relay's).
	again := openLineTerm(t, w.bast, w.key(t, "alice-1"), "alice")
	again.typeLine(`echo "again=${BASTION_BECOME_SOCK:+$((40+2))}"`)
	again.expect("again=42")
	again.typeLine("exit")
	again.wait()
	// What the socket cost the prompt (the first login waited for the
	// pod there, with the progress line).
	for _, line := range strings.Split(w.bast.logs(), "\n") {
		if i := strings.Index(line, "msg=\"become socket ready\""); i >= 0 {
			t.Log(line[i:])
		}
	}
}

// TestBecomeInShellResize: with OpenSSH's client on a real terminal, the
// tool's shell opened by become has the terminal's size and follows it
// when the terminal is resized (SIGWINCH to ssh, window-change to bastion,
// SIGWINCH to become, a resize frame, the tool's pty).
func TestBecomeInShellResize(t *testing.T) {
	t.Parallel()
	w := startLDAPWorld(t)
	args := append(w.bast.sshOptsKey(w.key(t, "alice-1")), "-tt", "-p", w.bast.port, "alice@127.0.0.1")
	cmd := exec.Command("ssh", args...)
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var out strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 4096)
		for {
			n, err := f.Read(b)
			mu.Lock()
			out.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); f.Close(); <-done; _ = cmd.Wait() })
	seen := 0
	expect := func(want string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%q on the terminal", want), 60*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			if i := strings.Index(out.String()[seen:], want); i >= 0 {
				seen += i + len(want)
				return true
			}
			return false
		})
	}
	send := func(s string) { _, _ = f.WriteString(s + "\n") }
	send("become mytool")
	send(`echo "in=$USER size=$(stty size | tr ' ' x)"`)
	expect("in=tools.mytool size=30x100")
	if err := pty.Setsize(f, &pty.Winsize{Rows: 45, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new size in the tool's shell", 20*time.Second, func() bool {
		send(`echo "now=$(stty size | tr ' ' x)"`)
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(out.String()[seen:], "now=45x132")
	})
	send("exit")
	waitFor(t, "the become session's end in the log", 30*time.Second, func() bool {
		return strings.Contains(w.bast.logs(), "via=shell kind=become account=tools.mytool exit_status=0")
	})
	send("exit")
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("ssh did not end after two exits")
	}
}

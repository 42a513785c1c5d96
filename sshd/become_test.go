package sshd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastion-ssh/bastion/internal/become"
)

// The test binary is also the `become` command of the fixture's shells
// (see TestMain), linked as become in a directory the shell puts on its
// PATH (pathLine) as bastion links its own binary (a login shell's
// profile resets PATH).
func becomeDir(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(exe, filepath.Join(dir, "become")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// becomeFixture is a fixture whose backend listens for become, and the
// shell line that puts become on PATH.
func becomeFixture(t *testing.T, mutate func(*Settings)) (*fixture, string) {
	t.Helper()
	f := newFixtureWith(t, fixtureOpts{mutate: mutate})
	return f, `PATH="$PATH:` + becomeDir(t) + `"` + "\n"
}

// auditEvents returns the fixture's audit events of the given types.
func auditEvents(t *testing.T, f *fixture, types ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(f.audit.String()))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		for _, typ := range types {
			if ev["event"] == typ {
				out = append(out, ev)
			}
		}
	}
	return out
}

// TestBecomeInShell types become in a shell (no pty): the tool's
// commands run as the tool, a tool the user does not maintain gets the
// SSH level's refusal, exit statuses and signals come back as a shell
// reports them, and the audit log has each with via=shell.
func TestBecomeInShell(t *testing.T) {
	f, pathLine := becomeFixture(t, nil)
	c := f.dial(t, f.user)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	// become relays its stdin (as ssh does): in a script, </dev/null.
	s.Stdin = strings.NewReader(pathLine + "BECOME_DIR=${PATH##*:}\n" + `become mytool 'echo "$USER $BASTION_TOOL"' </dev/null; echo "status $?"
become othertl id </dev/null; echo "status $?"
become nosuch id </dev/null; echo "status $?"
become </dev/null; echo "status $?"
become mytool exit 3 </dev/null; echo "status $?"
become mytool 'kill -TERM $$' </dev/null; echo "status $?"
echo hello | become mytool 'cat; echo " from $USER"'; echo "status $?"
become mytool "PATH=\$PATH:$BECOME_DIR; become mytool true" </dev/null; echo "status $?"
echo "back to $USER"
`)
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Fatalf("shell: %v\nstdout %q\nstderr %q\nlogs:\n%s", err, out.String(), errb.String(), f.logs.String())
	}
	want := "tools.mytool mytool\nstatus 0\nstatus 1\nstatus 1\nstatus 1\nstatus 3\nstatus 143\nhello\n from tools.mytool\nstatus 0\nstatus 1\nback to " + f.user + "\n"
	if out.String() != want {
		t.Errorf("stdout %q\nwant   %q", out.String(), want)
	}
	wantErr := "become: " + f.user + " is not a maintainer of tool othertl\n" +
		"become: nosuch: no such tool; check the name\n" +
		become.Usage + "\n" +
		"Terminated\n" +
		"become: you are already acting as tool mytool; exit to return to your own shell first\n"
	if errb.String() != wantErr {
		t.Errorf("stderr %q\nwant   %q", errb.String(), wantErr)
	}

	f.stop() // flushes the audit log's last events
	evs := auditEvents(t, f, "become", "become.deny")
	var got []string
	for _, ev := range evs {
		got = append(got, ev["event"].(string)+" "+str(ev["tool"])+str(ev["account"])+" "+str(ev["via"])+" "+str(ev["reason"]))
	}
	wantEv := []string{
		"become tools.mytool shell ", "become.deny othertl shell not a maintainer", "become.deny nosuch shell no such tool",
		"become tools.mytool shell ", "become tools.mytool shell ", "become tools.mytool shell ", "become tools.mytool shell ",
	}
	if strings.Join(got, "\n") != strings.Join(wantEv, "\n") {
		t.Errorf("audit become events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantEv, "\n"))
	}
	var ends []string
	for _, ev := range auditEvents(t, f, "session.end") {
		if ev["via"] == "shell" {
			ends = append(ends, str(ev["account"])+" "+str(ev["command"])+" "+jsonNum(ev["exit_status"])+"/"+str(ev["signal"]))
		}
	}
	wantEnds := "tools.mytool echo \"$USER $BASTION_TOOL\" 0/|tools.mytool exit 3 3/|tools.mytool kill -TERM $$ 0/TERM|tools.mytool cat; echo \" from $USER\" 0/|tools.mytool PATH=$PATH:" + strings.TrimSuffix(strings.TrimPrefix(pathLine, `PATH="$PATH:`), "\"\n") + "; become mytool true 1/"
	if strings.Join(ends, "|") != wantEnds {
		t.Errorf("session.end via shell: %q\nwant %q", strings.Join(ends, "|"), wantEnds)
	}
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func jsonNum(v any) string {
	if n, ok := v.(float64); ok {
		return fmt.Sprint(n)
	}
	return "-"
}

// TestBecomeInShellPTY types become mytool at an interactive shell's
// prompt: the tool's shell gets a terminal of the outer size, follows a
// resize of the outer terminal, and exit returns to the person's shell.
func TestBecomeInShellPTY(t *testing.T) {
	f, pathLine := becomeFixture(t, nil)
	c := f.dial(t, f.user)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm", 30, 100, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	in, _ := s.StdinPipe()
	outR, outW := io.Pipe()
	s.Stdout = outW
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	r := newExpecter(t, outR)
	defer outW.Close()
	io.WriteString(in, pathLine+"become mytool\n")
	io.WriteString(in, "echo \"who=$USER\"; stty size; echo done$((0+1))\n")
	r.expect("who=tools.mytool")
	r.expect("30 100")
	r.expect("done1")
	if err := s.WindowChange(40, 120); err != nil {
		t.Fatal(err)
	}
	// The resize travels: outer pty, SIGWINCH to become, a frame, the
	// tool's pty. Ask until it has arrived.
	deadline := time.Now().Add(10 * time.Second)
	for {
		io.WriteString(in, "stty size; echo done$((1+1))\n")
		if line := r.expect("done2"); strings.Contains(line, "40 120") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the tool's terminal never got the new size")
		}
		time.Sleep(100 * time.Millisecond)
	}
	io.WriteString(in, "exit 5\n")
	// Input typed before the tool's shell has ended goes to it (as with
	// ssh): wait for the end before typing to the person's shell.
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(f.logs.String(), "kind=become account=tools.mytool exit_status=5") {
		if time.Now().After(deadline) {
			t.Fatalf("no end of the become session in the log:\n%s", f.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	io.WriteString(in, "echo \"status=$? who=$USER\"\n")
	r.expect("status=5 who=" + f.user)
	io.WriteString(in, "exit\n")
	if err := s.Wait(); err != nil {
		t.Fatalf("shell: %v", err)
	}
}

// expecter reads a stream and finds lines in it.
type expecter struct {
	t   *testing.T
	buf []byte
	ch  chan []byte
}

func newExpecter(t *testing.T, r io.Reader) *expecter {
	e := &expecter{t: t, ch: make(chan []byte, 64)}
	go func() {
		defer close(e.ch)
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			if n > 0 {
				e.ch <- append([]byte(nil), b[:n]...)
			}
			if err != nil {
				return
			}
		}
	}()
	return e
}

// expect waits for marker and returns what came before it since the
// last expect. Markers are made so that the terminal's echo of the
// command printing them does not contain them ($((1+1))).
func (e *expecter) expect(marker string) string {
	e.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		if i := bytes.Index(e.buf, []byte(marker)); i >= 0 {
			before := string(e.buf[:i])
			e.buf = e.buf[i+len(marker):]
			return before
		}
		select {
		case b, ok := <-e.ch:
			if !ok {
				e.t.Fatalf("stream ended before %q; got %q", marker, e.buf)
			}
			e.buf = append(e.buf, b...)
		case <-timeout:
			e.t.Fatalf("no %q in %q", marker, e.buf)
		}
	}
}

// TestBecomeSocketOnlyForPersonShells: exec sessions, forced commands and
// user+tool logins get no socket; a become request that never comes is
// cut; an oversized frame is refused; the socket goes with the shell.
func TestBecomeSocket(t *testing.T) {
	f, _ := becomeFixture(t, nil)
	run := func(login, cmd string, shell bool) string {
		c := f.dial(t, login)
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		s.Stdout = &out
		if shell {
			s.Stdin = strings.NewReader(cmd + "\n")
			err = s.Shell()
		} else {
			err = s.Start(cmd)
		}
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Wait()
		return out.String()
	}
	probe := `echo "sock=${BASTION_BECOME_SOCK:-none} tool=${BASTION_TOOL:-none}"`
	if got := run(f.user, probe, false); got != "sock=none tool=none\n" {
		t.Errorf("exec session: %q", got)
	}
	if got := run(f.user+"+mytool", probe, true); got != "sock=none tool=mytool\n" {
		t.Errorf("user+tool shell: %q", got)
	}
	if got := run(f.user, "become mytool "+probe, false); got != "sock=none tool=mytool\n" {
		t.Errorf("SSH-level become: %q", got)
	}
	got := run(f.user, probe, true)
	if !strings.HasPrefix(got, "sock=/") || !strings.HasSuffix(got, " tool=none\n") {
		t.Fatalf("person's shell: %q", got)
	}
	sock := strings.TrimPrefix(strings.Fields(got)[0], "sock=")
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket %s outlived its shell: %v", sock, err)
	}
}

// TestBecomeRequestBounds: a connection that sends nothing is cut after
// becomeRequestTimeout; one that sends an oversized request is closed.
func TestBecomeRequestBounds(t *testing.T) {
	f, _ := becomeFixture(t, nil)
	c := f.dial(t, f.user)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	in, _ := s.StdinPipe()
	outR, outW := io.Pipe()
	s.Stdout = outW
	defer outW.Close()
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	r := newExpecter(t, outR)
	io.WriteString(in, "echo \"sock=$BASTION_BECOME_SOCK\"\n")
	r.expect("sock=")
	sock := strings.TrimSpace(r.expect("\n"))
	// Oversized: a request frame announcing more than MaxRequest.
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	nc.Write([]byte{become.FrameRequest, 0xff, 0xff, 0xff, 0xff})
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := nc.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("an oversized request: read %d, %v; want the connection closed", n, err)
	}
	nc.Close()
	// Silent: cut after the request timeout (10 s).
	nc, err = net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	nc.SetReadDeadline(time.Now().Add(becomeRequestTimeout + 5*time.Second))
	if n, err := nc.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("a silent connection: read %d, %v after %s; want closed", n, err, time.Since(start))
	}
	nc.Close()

	// A client that stops reading a tool's session (yes prints forever)
	// does not keep the person's shell from ending.
	nc, err = net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fc := become.NewConn(nc)
	p, _ := become.Request{Tool: "mytool", Command: "yes"}.Marshal()
	if err := fc.WriteFrame(become.FrameRequest, p); err != nil {
		t.Fatal(err)
	}
	if typ, p, err := fc.ReadFrame(); err != nil || typ != become.FrameReply {
		t.Fatalf("reply: %d %q %v", typ, p, err)
	}
	time.Sleep(time.Second) // yes fills the socket's buffers
	io.WriteString(in, "exit\n")
	ended := make(chan error, 1)
	go func() { ended <- s.Wait() }()
	select {
	case <-ended:
	case <-time.After(15 * time.Second):
		t.Fatalf("the shell did not end while a become client did not read\nlogs:\n%s", f.logs.String())
	}
}

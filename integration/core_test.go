package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/bastion-ssh/bastion/session/sessiontest"
)

func TestExec(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "")
	home, _ := os.UserHomeDir()
	tests := []struct {
		name       string
		stdin      string
		args       []string
		wantOut    string
		wantErr    string
		wantCode   int
		wantOutRE  string
		notWantOut string
	}{
		{name: "exit status", args: []string{"--", "exit 3"}, wantCode: 3},
		{name: "stdout and stderr apart", args: []string{"--", "echo out; echo err >&2"}, wantOut: "out\n", wantErr: "err\n"},
		{name: "stdin and EOF", stdin: "hi\n", args: []string{"--", "cat"}, wantOut: "hi\n"},
		{name: "stdin bytes counted", stdin: strings.Repeat("x", 100000), args: []string{"--", "wc -c"}, wantOut: "100000\n"},
		{name: "killed by signal", args: []string{"--", "kill -TERM $$"}, wantCode: 255},
		{name: "no pty without -t", args: []string{"--", "tty"}, wantOut: "not a tty\n", wantCode: 1},
		{name: "pty with -tt", args: []string{"-tt", "--", "tty"}, wantOutRE: `^/dev/pts/\d+\r\n$`},
		{name: "starts in home", args: []string{"--", "pwd"}, wantOut: home + "\n"},
		{name: "USER and LOGNAME", args: []string{"--", `echo "$USER $LOGNAME"`}, wantOut: s.user + " " + s.user + "\n"},
		{name: "HOME SHELL PATH set", args: []string{"--", `test -n "$HOME" && test -n "$SHELL" && test -n "$PATH" && echo ok`}, wantOut: "ok\n"},
		{name: "SSH_CONNECTION", args: []string{"--", `echo "$SSH_CONNECTION"`}, wantOutRE: `^127\.0\.0\.1 \d+ 127\.0\.0\.1 ` + s.port + `\n$`},
		{name: "SSH_CLIENT", args: []string{"--", `echo "$SSH_CLIENT"`}, wantOutRE: `^127\.0\.0\.1 \d+ ` + s.port + `\n$`},
		{name: "TERM from pty-req", args: []string{"-tt", "-o", "SetEnv=TERM=vt220", "--", `echo "$TERM"`}, wantOut: "vt220\r\n"},
		{name: "LANG accepted", args: []string{"-o", "SetEnv=LANG=fr_FR.UTF-8", "--", `echo "$LANG"`}, wantOut: "fr_FR.UTF-8\n"},
		{name: "LC_ accepted", args: []string{"-o", "SetEnv=LC_TIME=C", "--", `echo "$LC_TIME"`}, wantOut: "C\n"},
		{name: "others refused silently", args: []string{"-o", "SetEnv=EVIL=1", "--", `echo "[$EVIL]"`}, wantOut: "[]\n"},
		{name: "remote forwarding, session works", args: []string{"-R", "0:127.0.0.1:9", "--", "echo ran"}, wantOut: "ran\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := s.run(t, tt.stdin, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stdout %q, stderr %q)", code, tt.wantCode, out, errOut)
			}
			if tt.wantOut != "" && out != tt.wantOut {
				t.Errorf("stdout = %q, want %q", out, tt.wantOut)
			}
			if tt.wantOutRE != "" && !regexp.MustCompile(tt.wantOutRE).MatchString(out) {
				t.Errorf("stdout = %q, want match %q", out, tt.wantOutRE)
			}
			if tt.wantErr != "" && errOut != tt.wantErr {
				t.Errorf("stderr = %q, want %q", errOut, tt.wantErr)
			}
		})
	}
}

func TestExitSignalReported(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "")
	_, errOut, code := s.run(t, "", "-o", "LogLevel=DEBUG", "--", "kill -TERM $$")
	if code != 255 {
		t.Fatalf("exit code %d, want 255", code)
	}
	if !strings.Contains(errOut, "exit-signal") {
		t.Fatalf("client did not receive exit-signal:\n%s", errOut)
	}
}

func TestX11Refused(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", append([]string{"-o", "LogLevel=INFO", "-X"}, append(s.sshOpts(), "-p", s.port, s.user+"@127.0.0.1", "echo ran")...)...)
	cmd.Env = append(os.Environ(), "DISPLAY=:0")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ran") || !strings.Contains(string(out), "X11 forwarding request failed") {
		t.Fatalf("ssh -X: err %v, output:\n%s", err, out)
	}
}

func TestAuthFailuresLookAlike(t *testing.T) {
	needTools(t, "ssh", "ssh-keygen")
	t.Parallel()
	s := startDev(t, "")
	other := userKey(t, t.TempDir(), "other")
	cases := []struct{ name, key, user string }{
		{"wrong key", other, s.user},
		{"unknown user", s.key, "nosuchuser"},
		{"invalid user name", s.key, "x*y"},
		{"overlong user name", s.key, strings.Repeat("a", 100)},
	}
	var msgs []string
	for _, c := range cases {
		out, errOut, code := s.runAs(t, c.key, c.user, "", "--", "echo in")
		if code != 255 || out != "" {
			t.Errorf("%s: got in (code %d, out %q)", c.name, code, out)
		}
		msgs = append(msgs, strings.ReplaceAll(errOut, c.user, "USER"))
	}
	for i := range msgs {
		if msgs[i] != msgs[0] || !strings.Contains(msgs[i], "Permission denied (publickey)") {
			t.Errorf("%s: client saw %q, want the same denial as %s: %q", cases[i].name, msgs[i], cases[0].name, msgs[0])
		}
	}
	// Password and keyboard-interactive are not offered.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "ssh", append([]string{"-o", "PreferredAuthentications=password,keyboard-interactive"}, append(s.sshOpts(), "-p", s.port, s.user+"@127.0.0.1", "true")...)...).CombinedOutput()
	if !strings.Contains(string(out), "Permission denied (publickey)") {
		t.Errorf("password auth: %s", out)
	}
}

// ptySession runs an interactive ssh under a local pty, as a person would.
type ptySession struct {
	t    *testing.T
	cmd  *exec.Cmd
	tty  *os.File
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

func startPTY(t *testing.T, s *server, extra ...string) *ptySession {
	args := append(s.sshOpts(), "-tt", "-p", s.port)
	args = append(args, extra...)
	args = append(args, s.user+"@127.0.0.1")
	cmd := exec.Command("ssh", args...)
	cmd.Env = append(os.Environ(), "TERM=xterm")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		t.Fatal(err)
	}
	p := &ptySession{t: t, cmd: cmd, tty: tty, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		b := make([]byte, 4096)
		for {
			n, err := tty.Read(b)
			p.mu.Lock()
			p.buf.Write(b[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		tty.Close()
		<-p.done
	})
	return p
}

func (p *ptySession) send(s string) {
	if _, err := p.tty.Write([]byte(s)); err != nil {
		p.t.Fatalf("write to pty: %v", err)
	}
}

func (p *ptySession) expect(re string) {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	waitFor(p.t, fmt.Sprintf("%q in terminal output", re), 15*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return rx.Match(p.buf.Bytes())
	})
}

func TestInteractiveShell(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "")
	p := startPTY(t, s)
	p.send("stty size; echo MARK-$((40+2))\r")
	p.expect(`24 80\r\n(.*\r\n)?MARK-42`)

	if err := pty.Setsize(p.tty, &pty.Winsize{Rows: 33, Cols: 101}); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGWINCH)
	p.send("stty size; echo MARK-$((40+3))\r")
	p.expect(`33 101\r\n(.*\r\n)?MARK-43`)

	// Ctrl-C reaches the foreground process, not the shell.
	p.send("sleep 60; echo SLEEP-$((1+1))-DONE\r")
	time.Sleep(500 * time.Millisecond)
	p.send("\x03")
	p.send("echo ALIVE-$((2+2))\r")
	p.expect(`ALIVE-4`)
	p.mu.Lock()
	if strings.Contains(p.buf.String(), "SLEEP-2-DONE") {
		t.Error("sleep was not interrupted")
	}
	p.mu.Unlock()

	p.send("exit 3\r")
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("ssh did not exit after `exit 3`")
	}
	err := p.cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("ssh exit = %v, want status 3", err)
	}
}

// transferFiles writes size bytes of the test pattern to src and makes
// dir/remote for the copies; it returns src's sha256 and the remote dir.
func transferFiles(t *testing.T, dir, src string, size int64) (want, remote string) {
	t.Helper()
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, newPattern(), size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	remote = filepath.Join(dir, "remote")
	if err := os.Mkdir(remote, 0o755); err != nil {
		t.Fatal(err)
	}
	return sha(t, src), remote
}

func sha(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestFileTransfer(t *testing.T) {
	needTools(t, "ssh", "scp", "sftp", "rsync")
	if _, err := os.Stat("/usr/lib/openssh/sftp-server"); err != nil {
		t.Fatalf("sftp-server missing (apt-get install openssh-sftp-server): %v", err)
	}
	s := startDev(t, "")
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	size := int64(1 << 30)
	if testing.Short() {
		size = 8 << 20
	}
	want, remote := transferFiles(t, dir, src, size)
	opts := s.sshOpts()
	sshCmd := "ssh " + strings.Join(append(opts, "-p", s.port), " ")
	target := s.user + "@127.0.0.1:"
	cases := []struct {
		name string
		up   []string
		down []string
	}{
		{"scp", append(append([]string{"scp"}, opts...), "-P", s.port, src, target+remote+"/scp"),
			append(append([]string{"scp"}, opts...), "-P", s.port, target+remote+"/scp", dir+"/scp.back")},
		{"scp-O", append(append([]string{"scp", "-O"}, opts...), "-P", s.port, src, target+remote+"/scpO"),
			append(append([]string{"scp", "-O"}, opts...), "-P", s.port, target+remote+"/scpO", dir+"/scpO.back")},
		{"rsync", []string{"rsync", "-e", sshCmd, src, target + remote + "/rsync"},
			[]string{"rsync", "-e", sshCmd, target + remote + "/rsync", dir + "/rsync.back"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i, argv := range [][]string{c.up, c.down} {
				out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
				if err != nil {
					t.Fatalf("%s (direction %d): %v\n%s", c.name, i, err, out)
				}
			}
			for _, p := range []string{remote + "/" + strings.ReplaceAll(c.name, "-", ""), dir + "/" + strings.ReplaceAll(c.name, "-", "") + ".back"} {
				if got := sha(t, p); got != want {
					t.Errorf("%s: %s differs from the source", c.name, p)
				}
				os.Remove(p)
			}
		})
	}
	t.Run("sftp", func(t *testing.T) {
		batch := filepath.Join(dir, "batch")
		os.WriteFile(batch, []byte(fmt.Sprintf("put %s %s/sftp\nget %s/sftp %s/sftp.back\n", src, remote, remote, dir)), 0o600)
		argv := append(append([]string{"-b", batch}, opts...), "-P", s.port, s.user+"@127.0.0.1")
		out, err := exec.Command("sftp", argv...).CombinedOutput()
		if err != nil {
			t.Fatalf("sftp: %v\n%s", err, out)
		}
		for _, p := range []string{remote + "/sftp", dir + "/sftp.back"} {
			if got := sha(t, p); got != want {
				t.Errorf("sftp: %s differs from the source", p)
			}
		}
	})
	// The subsystem runs as a process of the backend, not inside bastion.
	if !strings.Contains(s.logs(), "command=/usr/lib/openssh/sftp-server") {
		t.Errorf("no sftp-server session in the log:\n%s", s.logs())
	}
}

// pattern is a fast, non-repeating-looking byte stream for big files.
type pattern struct{ n uint64 }

func newPattern() *pattern { return &pattern{n: 0x9e3779b97f4a7c15} }

func (p *pattern) Read(b []byte) (int, error) {
	for i := 0; i < len(b); i += 8 {
		p.n ^= p.n << 13
		p.n ^= p.n >> 7
		p.n ^= p.n << 17
		for j := 0; j < 8 && i+j < len(b); j++ { // a short tail too: Read never returns 0, nil
			b[i+j] = byte(p.n >> (8 * j))
		}
	}
	return len(b), nil
}

func TestLocalForward(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	echo := sessiontest.EchoServer(t)
	_, echoPort, _ := net.SplitHostPort(echo)
	s := startDev(t, "forwarding:\n  allow: [\"127.0.0.1:"+echoPort+"\"]\n")
	lport := freePort(t)
	deniedPort := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	args := append([]string{"-o", "LogLevel=INFO"}, s.sshOpts()...)
	args = append(args, "-N", "-p", s.port,
		"-L", "127.0.0.1:"+lport+":"+echo,
		"-L", "127.0.0.1:"+deniedPort+":10.9.9.9:80",
		s.user+"@127.0.0.1")
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var stderr bytes.Buffer
	var mu sync.Mutex
	cmd.Stderr = &lockedWriter{mu: &mu, w: &stderr}
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
	msg := bytes.Repeat([]byte("ping through the tunnel "), 10000)
	go func() { c.Write(msg); c.(*net.TCPConn).CloseWrite() }()
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through -L: %d bytes, err %v; want %d bytes", len(got), err, len(msg))
	}

	d, err := net.Dial("tcp", "127.0.0.1:"+deniedPort)
	if err != nil {
		t.Fatal(err)
	}
	d.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, rerr := d.Read(make([]byte, 1))
	d.Close()
	if n != 0 || rerr == nil || isTimeout(rerr) {
		t.Fatalf("denied forward: read %d bytes, err %v; want the connection closed at once", n, rerr)
	}
	waitFor(t, "the client's open-failure message", 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(stderr.String(), "administratively prohibited")
	})
	waitFor(t, "the server's log line", 5*time.Second, func() bool {
		return strings.Contains(s.logs(), "forward denied") && strings.Contains(s.logs(), "10.9.9.9:80")
	})
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

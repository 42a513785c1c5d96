package become

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBastion accepts one connection on a unix socket and runs serve on
// it; what serve got is returned by wait.
func fakeBastion(t *testing.T, serve func(c *Conn, r Request)) (sock string, wait func()) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "become.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer l.Close()
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		c := NewConn(nc)
		typ, p, err := c.ReadFrame()
		if err != nil || typ != FrameRequest {
			t.Errorf("first frame: %d %v", typ, err)
			return
		}
		r, err := ParseRequest(p)
		if err != nil {
			t.Errorf("request: %v", err)
			return
		}
		serve(c, r)
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return sock, wg.Wait
}

// runClient runs Main with pipes for its streams and returns its status
// and output.
func runClient(t *testing.T, args []string, env map[string]string, stdin string) (code int, stdout, stderr string) {
	t.Helper()
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	var wg sync.WaitGroup
	var ob, eb bytes.Buffer
	wg.Add(3)
	go func() { defer wg.Done(); io.WriteString(inW, stdin); inW.Close() }()
	go func() { defer wg.Done(); io.Copy(&ob, outR) }()
	go func() { defer wg.Done(); io.Copy(&eb, errR) }()
	code = Main(args, func(k string) string { return env[k] }, inR, outW, errW)
	outW.Close()
	errW.Close()
	wg.Wait()
	inR.Close()
	return code, ob.String(), eb.String()
}

func TestClientNoSocket(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"no tool", nil, nil, 1, Usage},
		{"flag for a tool", []string{"-x"}, nil, 1, Usage},
		{"not in a bastion shell", []string{"mytool"}, nil, 1, "become: not available in this session"},
		{"nested", []string{"othertool"}, map[string]string{ToolVar: "mytool"}, 1, "become: you are already acting as tool mytool; exit to return to your own shell first"},
		{"socket gone", []string{"mytool"}, map[string]string{SockVar: "/nonexistent/become.sock"}, 1, "become: bastion's become service is not available in this shell (BASTION_BECOME_SOCK=/nonexistent/become.sock: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			code, _, stderr := runClient(t, tc.args, tc.env, "")
			if code != tc.code || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("status %d, stderr %q; want %d and one line with %q", code, stderr, tc.code, tc.want)
			}
			if took := time.Since(start); took > startWait+2*time.Second {
				t.Errorf("took %s; the wait for the socket is bounded by %s", took, startWait)
			}
		})
	}
}

// TestClientSocketLate: the socket's path may be in the environment
// before it listens (the kube backend's relay starts alongside the
// shell); become typed at once waits for it instead of failing.
func TestClientSocketLate(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "become.sock")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(500 * time.Millisecond)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Error(err)
			return
		}
		defer l.Close()
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		c := NewConn(nc)
		if _, _, err := c.ReadFrame(); err != nil {
			t.Errorf("request: %v", err)
			return
		}
		c.WriteFrame(FrameReply, Reply{Message: "late but here"}.Marshal())
	}()
	code, _, stderr := runClient(t, []string{"mytool"}, map[string]string{SockVar: sock}, "")
	wg.Wait()
	if code != 1 || stderr != "become: late but here\n" {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
}

func TestClientRefused(t *testing.T) {
	var got Request
	sock, wait := fakeBastion(t, func(c *Conn, r Request) {
		got = r
		c.WriteFrame(FrameReply, Reply{Message: "alice is not a maintainer of tool othertool"}.Marshal())
	})
	code, _, stderr := runClient(t, []string{"othertool", "id", "-u"}, map[string]string{SockVar: sock, "TERM": "xterm"}, "")
	wait()
	if code != 1 || stderr != "become: alice is not a maintainer of tool othertool\n" {
		t.Fatalf("status %d, stderr %q", code, stderr)
	}
	// Pipes are not a terminal: no pty asked for, no TERM sent.
	if want := (Request{Tool: "othertool", Command: "id -u"}); got != want {
		t.Fatalf("request %+v, want %+v", got, want)
	}
}

func TestClientSession(t *testing.T) {
	sock, wait := fakeBastion(t, func(c *Conn, r Request) {
		c.WriteFrame(FrameReply, Reply{OK: true}.Marshal())
		// Echo stdin back on stdout until EOF, then say goodbye on
		// stderr and exit 7.
		var in []byte
		for {
			typ, p, err := c.ReadFrame()
			if err != nil {
				t.Errorf("read: %v", err)
				return
			}
			if typ == FrameEOF {
				break
			}
			if typ == FrameStdin {
				in = append(in, p...)
			}
		}
		c.Writer(FrameStdout).Write(in)
		c.Writer(FrameStderr).Write([]byte("bye " + r.Command + "\n"))
		c.WriteFrame(FrameExit, Exit{Code: 7}.Marshal())
	})
	input := strings.Repeat("line of input\n", 10000) // several frames
	code, stdout, stderr := runClient(t, []string{"mytool", "cat"}, map[string]string{SockVar: sock}, input)
	wait()
	if code != 7 || stdout != input || stderr != "bye cat\n" {
		t.Fatalf("status %d, %d bytes of stdout (want %d), stderr %q", code, len(stdout), len(input), stderr)
	}
}

func TestClientExitBySignal(t *testing.T) {
	for _, tc := range []struct {
		exit Exit
		code int
		line string
	}{
		{Exit{Signal: "TERM"}, 143, "Terminated\n"},
		{Exit{Signal: "KILL"}, 137, "Killed\n"},
		{Exit{Signal: "SEGV", CoreDumped: true}, 139, "Segmentation fault (core dumped)\n"},
		{Exit{Signal: "INT"}, 130, ""},
		{Exit{Code: 255, Message: "the server is shutting down"}, 255, "bastion: the server is shutting down\n"},
	} {
		sock, wait := fakeBastion(t, func(c *Conn, r Request) {
			c.WriteFrame(FrameReply, Reply{OK: true}.Marshal())
			c.WriteFrame(FrameExit, tc.exit.Marshal())
		})
		code, _, stderr := runClient(t, []string{"mytool"}, map[string]string{SockVar: sock}, "")
		wait()
		if code != tc.code || stderr != tc.line {
			t.Errorf("%+v: status %d, stderr %q; want %d, %q", tc.exit, code, stderr, tc.code, tc.line)
		}
	}
}

func TestClientConnectionLost(t *testing.T) {
	sock, wait := fakeBastion(t, func(c *Conn, r Request) {
		c.WriteFrame(FrameReply, Reply{OK: true}.Marshal())
		c.Writer(FrameStdout).Write([]byte("partial"))
	})
	done := make(chan struct{})
	var code int
	var stdout, stderr string
	go func() {
		defer close(done)
		code, stdout, stderr = runClient(t, []string{"mytool"}, map[string]string{SockVar: sock}, "")
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not notice the connection closing")
	}
	wait()
	if code != 255 || stdout != "partial" || stderr != "become: connection to bastion lost\n" {
		t.Fatalf("status %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

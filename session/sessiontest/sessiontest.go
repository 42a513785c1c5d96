package sessiontest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session"
)

// Harness is what a backend's test provides.
type Harness struct {
	Backend session.Backend
	// Account is the identity to run as; its Home must be writable.
	Account auth.Account
	// SFTPServer is the path of sftp-server where processes run.
	SFTPServer string
	// EchoAddr is a TCP address, reachable through Dial, that echoes.
	EchoAddr string
	// SignalAsExitCode: the backend reports death by signal N as exit
	// code 128+N (Kubernetes exec does) instead of ExitStatus.Signal.
	SignalAsExitCode bool
	// ListenRefused: the backend implements session.Listener but this
	// setup cannot listen (kube without kube.pod.helper_image); Listen
	// must fail with a one-line UserError.
	ListenRefused bool
	// Close, if set, is called at the end of each subtest, after every
	// stream was closed; it must wait for the backend's goroutines.
	Close func()
}

func harness(t *testing.T, newHarness func(t *testing.T) Harness) Harness {
	h := newHarness(t)
	if h.Close != nil {
		t.Cleanup(h.Close)
	}
	return h
}

// result is what one Run produced.
type result struct {
	st     session.ExitStatus
	err    error
	stdout string
	stderr string
}

// SyncBuffer is a bytes.Buffer safe for a writer and a poller.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func request(h Harness, command, stdin string) session.Request {
	return session.Request{
		User:    &auth.User{Account: h.Account},
		Account: h.Account,
		Command: command,
		Env:     map[string]string{"LANG": "C"},
		Stdin:   strings.NewReader(stdin),
	}
}

func run(t *testing.T, h Harness, r session.Request) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb SyncBuffer
	r.Stdout, r.Stderr = &out, &errb
	st, err := h.Backend.Run(ctx, r)
	return result{st: st, err: err, stdout: out.String(), stderr: errb.String()}
}

// Run runs the conformance suite. newHarness is called once per subtest.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("ExitCodes", func(t *testing.T) {
		h := harness(t, newHarness)
		for _, c := range []struct {
			cmd  string
			want int
		}{{"true", 0}, {"false", 1}, {"exit 7", 7}, {"exit 255", 255}} {
			r := run(t, h, request(h, c.cmd, ""))
			if r.err != nil || r.st.Code != c.want || r.st.Signal != "" {
				t.Errorf("%q: status %+v, err %v; want code %d", c.cmd, r.st, r.err, c.want)
			}
		}
	})
	t.Run("StdoutStderrApart", func(t *testing.T) {
		h := harness(t, newHarness)
		r := run(t, h, request(h, "echo out; echo err >&2", ""))
		if r.stdout != "out\n" || r.stderr != "err\n" {
			t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
		}
	})
	t.Run("StdinEOF", func(t *testing.T) {
		h := harness(t, newHarness)
		r := run(t, h, request(h, "cat; echo END", "hello\nworld\n"))
		if r.err != nil || r.stdout != "hello\nworld\nEND\n" {
			t.Errorf("stdout %q err %v", r.stdout, r.err)
		}
	})
	t.Run("ExitBeforeStdinEOF", func(t *testing.T) {
		h := harness(t, newHarness)
		req := request(h, "echo done", "")
		pr, pw := io.Pipe() // never written: like a terminal nobody types in
		defer pw.Close()
		req.Stdin = pr
		done := make(chan result, 1)
		go func() { done <- run(t, h, req) }()
		select {
		case r := <-done:
			if r.stdout != "done\n" || r.st.Code != 0 {
				t.Errorf("stdout %q status %+v", r.stdout, r.st)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after the process exited while stdin stayed open")
		}
	})
	t.Run("LargeOutput", func(t *testing.T) {
		h := harness(t, newHarness)
		const n = 16 << 20
		r := run(t, h, request(h, fmt.Sprintf("head -c %d /dev/zero", n), ""))
		if r.err != nil || len(r.stdout) != n {
			t.Errorf("got %d bytes, err %v; want %d", len(r.stdout), r.err, n)
		}
	})
	t.Run("LargeInput", func(t *testing.T) {
		h := harness(t, newHarness)
		in := strings.Repeat("0123456789abcdef", 1<<20)
		r := run(t, h, request(h, "wc -c", in))
		if r.err != nil || strings.TrimSpace(r.stdout) != fmt.Sprint(len(in)) {
			t.Errorf("wc -c said %q, err %v; want %d", r.stdout, r.err, len(in))
		}
	})
	t.Run("KilledBySignal", func(t *testing.T) {
		h := harness(t, newHarness)
		for _, c := range []struct {
			cmd    string
			tty    bool
			signal session.Signal
			code   int // 128+N, for SignalAsExitCode
		}{
			{"kill -TERM $$", false, "TERM", 143},
			{"kill -KILL $$", false, "KILL", 137},
			{"kill -TERM $$", true, "TERM", 143},
			{"kill -VTALRM $$", false, "VTALRM", 154}, // not an RFC 4254 name
		} {
			req := request(h, c.cmd, "")
			if c.tty {
				req.TTY = &session.TTY{Term: "xterm", Size: session.WindowSize{Cols: 80, Rows: 24}}
			}
			r := run(t, h, req)
			if h.SignalAsExitCode {
				if r.err != nil || (r.st.Code != c.code && r.st.Signal != c.signal) {
					t.Errorf("%q (tty %v): status %+v err %v, want code %d or signal %s", c.cmd, c.tty, r.st, r.err, c.code, c.signal)
				}
				continue
			}
			if r.err != nil || r.st.Signal != c.signal || r.st.Code != 0 {
				t.Errorf("%q (tty %v): status %+v err %v; want signal %s", c.cmd, c.tty, r.st, r.err, c.signal)
			}
		}
	})
	t.Run("Environment", func(t *testing.T) {
		h := harness(t, newHarness)
		r := run(t, h, request(h, `echo "$HOME|$USER|$LOGNAME|$LANG"; pwd`, ""))
		a := h.Account
		want := fmt.Sprintf("%s|%s|%s|C\n%s\n", a.Home, a.Name, a.Name, a.Home)
		if r.stdout != want {
			t.Errorf("got %q, want %q", r.stdout, want)
		}
	})
	t.Run("TTYAndResize", func(t *testing.T) {
		h := harness(t, newHarness)
		resize := make(chan session.WindowSize, 1)
		req := request(h, `echo "TERM=$TERM"; tty >/dev/null && echo TTY; while :; do stty size; sleep 0.1; done`, "")
		pr, pw := io.Pipe()
		defer pw.Close()
		req.Stdin = pr
		req.TTY = &session.TTY{Term: "xterm-256color", Size: session.WindowSize{Cols: 80, Rows: 24}, Resize: resize}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out SyncBuffer
		req.Stdout, req.Stderr = &out, &out
		done := make(chan error, 1)
		go func() { _, err := h.Backend.Run(ctx, req); done <- err }()
		waitOutput(t, &out, "24 80")
		resize <- session.WindowSize{Cols: 132, Rows: 43}
		waitOutput(t, &out, "43 132")
		if s := out.String(); !strings.Contains(s, "TERM=xterm-256color") || !strings.Contains(s, "TTY") {
			t.Errorf("output %q: want TERM and a tty", s)
		}
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	})
	t.Run("TTYInputEOF", func(t *testing.T) {
		// ssh -tt host cmd </dev/null: the client's EOF must not end a
		// terminal session before the command's output is out.
		h := harness(t, newHarness)
		for i := 0; i < 3; i++ {
			req := request(h, "sleep 0.5; echo tty-out-$((20+22))", "")
			req.TTY = &session.TTY{Term: "xterm", Size: session.WindowSize{Cols: 80, Rows: 24}}
			r := run(t, h, req)
			if r.err != nil || r.st.Code != 0 || !strings.Contains(r.stdout, "tty-out-42") {
				t.Fatalf("run %d: status %+v err %v output %q", i, r.st, r.err, r.stdout)
			}
		}
	})
	t.Run("CancelKills", func(t *testing.T) {
		h := harness(t, newHarness)
		ctx, cancel := context.WithCancel(context.Background())
		req := request(h, "echo started; sleep 300", "")
		var out SyncBuffer
		req.Stdout, req.Stderr = &out, io.Discard
		done := make(chan struct{})
		go func() { _, _ = h.Backend.Run(ctx, req); close(done) }()
		waitOutput(t, &out, "started")
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return within 30s of cancel")
		}
	})
	t.Run("SFTPRoundTrip", func(t *testing.T) {
		h := harness(t, newHarness)
		testSFTP(t, h)
	})
	t.Run("Dial", func(t *testing.T) {
		h := harness(t, newHarness)
		if h.EchoAddr == "" {
			t.Skip("harness has no echo address")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := h.Backend.Dial(ctx, request(h, "", ""), "tcp", h.EchoAddr)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close()
		msg := bytes.Repeat([]byte("echo "), 20000)
		go func() { _, _ = c.Write(msg) }()
		got := make([]byte, len(msg))
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo: %v", err)
		}
	})
	t.Run("ListenTCP", func(t *testing.T) {
		h := harness(t, newHarness)
		testListenTCP(t, h)
	})
	t.Run("ListenUnix", func(t *testing.T) {
		h := harness(t, newHarness)
		ListenUnix(t, h)
	})
}

// listener returns h's Backend as a session.Listener, or skips.
func listener(t *testing.T, h Harness) session.Listener {
	t.Helper()
	l, ok := h.Backend.(session.Listener)
	if !ok {
		t.Skip("backend does not implement session.Listener")
	}
	if h.ListenRefused {
		for _, network := range []string{"tcp", "unix"} {
			addr := ""
			if network == "tcp" {
				addr = "127.0.0.1:0"
			}
			ln, err := l.Listen(t.Context(), request(h, "", ""), network, addr)
			if err == nil {
				ln.Close()
				t.Fatalf("Listen %s succeeded; the harness says it is refused", network)
			}
			if msg, ok := session.UserMessage(err); !ok || strings.Contains(msg, "\n") {
				t.Fatalf("Listen %s: %v; want a one-line message for the user", network, err)
			}
		}
		t.Skip("listening is refused in this setup, with a message")
	}
	return l
}

// listenReply is how much testListenTCP's listener writes before it
// closes the connection.
const listenReply = 256 << 10

// testListenTCP listens on the account's loopback with an allocated
// port, and a process of the account connects to it with bash's
// /dev/tcp: what ssh -R 0:... relies on.
func testListenTCP(t *testing.T, h Harness) {
	bl := listener(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := bl.Listen(ctx, request(h, "", ""), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen tcp: %v", err)
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	if err != nil || port == "0" {
		t.Fatalf("Addr %q: want the allocated port (%v)", l.Addr(), err)
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "ping\n" {
			err = fmt.Errorf("read %q, want ping", line)
		}
		if err == nil {
			// A reply, then close at once: as on a TCP socket, every byte
			// written before the close reaches the process.
			_, err = io.WriteString(c, "pong\n"+strings.Repeat("x", listenReply))
		}
		accepted <- err
	}()
	cmd := fmt.Sprintf(`exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/%s && echo ping >&3 && wc -c <&3'`, port)
	r := run(t, h, request(h, cmd, ""))
	if err := <-accepted; err != nil {
		t.Fatalf("accept: %v (process: %+v %q %q)", err, r.st, r.stdout, r.stderr)
	}
	if want := fmt.Sprintf("%d\n", 5+listenReply); r.err != nil || r.st.Code != 0 || r.stdout != want {
		t.Fatalf("process: status %+v err %v stdout %q stderr %q; want %q", r.st, r.err, r.stdout, r.stderr, want)
	}
	// Closed: the port no longer accepts.
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	r = run(t, h, request(h, cmd, ""))
	if r.st.Code == 0 {
		t.Errorf("connecting after Close succeeded: %q", r.stdout)
	}
	if _, err := bl.Listen(ctx, request(h, "", ""), "tcp", "192.0.2.1:0"); err == nil {
		t.Errorf("Listen on a non-loopback address succeeded")
	}
}

// ListenUnix listens on a private unix socket and checks, from a
// process of the account, its mode, owner and that it answers: ssh-add
// talks to it as to an agent with no keys.
func ListenUnix(t *testing.T, h Harness) {
	bl := listener(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := bl.Listen(ctx, request(h, "", ""), "unix", "")
	if err != nil {
		t.Fatalf("Listen unix: %v", err)
	}
	defer l.Close()
	path := l.Addr().String()
	if !strings.HasPrefix(path, "/") {
		t.Fatalf("Addr %q: want an absolute path", path)
	}
	if st, ok := l.(session.Starting); ok {
		if err := st.Ready(ctx); err != nil {
			t.Fatalf("Ready: %v", err)
		}
	}
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		// SSH_AGENTC_REQUEST_IDENTITIES (11) → SSH_AGENT_IDENTITIES_ANSWER (12) with no keys.
		msg := make([]byte, 5)
		if _, err := io.ReadFull(c, msg); err != nil {
			accepted <- fmt.Errorf("read agent request: %w", err)
			return
		}
		if msg[4] != 11 {
			accepted <- fmt.Errorf("agent request type %d, want 11", msg[4])
			return
		}
		_, err = c.Write([]byte{0, 0, 0, 5, 12, 0, 0, 0, 0})
		accepted <- err
	}()
	q := "'" + path + "'"
	cmd := `stat -c '%a %u' ` + q + ` "$(dirname ` + q + `)"; command -v ssh-add >/dev/null || exit 99; SSH_AUTH_SOCK=` + q + ` ssh-add -l; echo "ssh-add $?"`
	r := run(t, h, request(h, cmd, ""))
	if r.st.Code == 99 {
		t.Skip("no ssh-add where the account's processes run")
	}
	want := fmt.Sprintf("600 %d\n700 %d\n", h.Account.UID, h.Account.UID)
	if !strings.HasPrefix(r.stdout, want) {
		t.Errorf("socket and directory modes and owners %q, want prefix %q", r.stdout, want)
	}
	if err := <-accepted; err != nil {
		t.Fatalf("accept: %v (process: %+v %q %q)", err, r.st, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "no identities") || !strings.HasSuffix(r.stdout, "ssh-add 1\n") {
		t.Errorf("ssh-add -l through the socket: stdout %q stderr %q", r.stdout, r.stderr)
	}
	l.Close()
	r = run(t, h, request(h, "test -e "+q+" || test -e \"$(dirname "+q+")\" || echo gone", ""))
	if r.stdout != "gone\n" {
		t.Errorf("socket or its directory left after Close: %q %q", r.stdout, r.stderr)
	}
}

func waitOutput(t *testing.T, out *SyncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output %q", want, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testSFTP speaks SFTP v3 to the backend's sftp-server: INIT, REALPATH,
// OPEN+WRITE+CLOSE of a file, then reads it back with cat.
func testSFTP(t *testing.T, h Harness) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	req := request(h, h.SFTPServer, "")
	req.Stdin = inR
	req.Stdout = outW
	req.Stderr = io.Discard
	done := make(chan error, 1)
	go func() {
		st, err := h.Backend.Run(ctx, req)
		outW.Close()
		if err == nil && st.Code != 0 {
			err = fmt.Errorf("sftp-server exited with %+v", st)
		}
		done <- err
	}()
	c := &sftpConn{w: inW, r: outR}
	// INIT → VERSION
	c.send(t, 1, u32(3))
	typ, _ := c.recv(t)
	if typ != 2 {
		t.Fatalf("SSH_FXP_INIT: got packet type %d, want VERSION (2)", typ)
	}
	// REALPATH "." → NAME with the home directory
	c.send(t, 16, u32(1), sstr("."))
	typ, body := c.recv(t)
	if typ != 104 || !bytes.Contains(body, []byte(h.Account.Home)) {
		t.Fatalf("REALPATH: type %d body %q; want NAME containing %s", typ, body, h.Account.Home)
	}
	// OPEN(write|creat|trunc) → HANDLE
	path := h.Account.Home + "/sftp-conformance.txt"
	c.send(t, 3, u32(2), sstr(path), u32(0x02|0x08|0x10), u32(0))
	typ, body = c.recv(t)
	if typ != 102 {
		t.Fatalf("OPEN: type %d body %q", typ, body)
	}
	handle := body[4:] // id, then string handle (kept with its length)
	payload := "written over sftp\n"
	c.send(t, 6, u32(3), handle, make([]byte, 8), sstr(payload))
	if typ, body = c.recv(t); typ != 101 || binary.BigEndian.Uint32(body[4:]) != 0 {
		t.Fatalf("WRITE: type %d body %q", typ, body)
	}
	c.send(t, 4, u32(4), handle)
	if typ, body = c.recv(t); typ != 101 || binary.BigEndian.Uint32(body[4:]) != 0 {
		t.Fatalf("CLOSE: type %d body %q", typ, body)
	}
	inW.Close()
	if err := <-done; err != nil {
		t.Fatalf("sftp-server: %v", err)
	}
	r := run(t, h, request(h, "cat "+path+" && rm "+path, ""))
	if r.stdout != payload {
		t.Fatalf("file written over sftp reads %q, want %q", r.stdout, payload)
	}
}

type sftpConn struct {
	w io.Writer
	r io.Reader
}

func u32(v uint32) []byte  { return binary.BigEndian.AppendUint32(nil, v) }
func sstr(s string) []byte { return append(u32(uint32(len(s))), s...) }

func (c *sftpConn) send(t *testing.T, typ byte, parts ...[]byte) {
	t.Helper()
	var body []byte
	body = append(body, typ)
	for _, p := range parts {
		body = append(body, p...)
	}
	if _, err := c.w.Write(append(u32(uint32(len(body))), body...)); err != nil {
		t.Fatalf("sftp send: %v", err)
	}
}

func (c *sftpConn) recv(t *testing.T) (byte, []byte) {
	t.Helper()
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		t.Fatalf("sftp recv: %v", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > 1<<20 {
		t.Fatalf("sftp recv: bad length %d", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.r, buf); err != nil {
		t.Fatalf("sftp recv: %v", err)
	}
	return buf[0], buf[1:]
}

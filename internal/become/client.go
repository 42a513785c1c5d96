package become

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// dialTimeout bounds connecting to bastion's socket.
const dialTimeout = 10 * time.Second

// startWait is how long become keeps trying a socket that is not there
// yet or refuses: bastion may put the path into the shell's environment
// before the socket listens (the kube backend starts the socket's relay
// alongside the shell), so a become typed at once may come early.
const startWait = 3 * time.Second

// dial connects to sock, retrying for up to wait while it does not exist
// or refuses.
func dial(sock string, wait time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(wait)
	pause := 20 * time.Millisecond
	for {
		nc, err := net.DialTimeout("unix", sock, dialTimeout)
		if err == nil || !(errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)) || time.Now().Add(pause).After(deadline) {
			return nc, err
		}
		time.Sleep(pause)
		pause = min(2*pause, 250*time.Millisecond)
	}
}

// Main is the become command; args are what follows "become". It returns
// the process's exit status: the tool session's, 128+N when a signal N
// killed it (after the line a shell prints for such a job), 1 when
// bastion refused, 255 when the connection to bastion was lost.
func Main(args []string, getenv func(string) string, stdin, stdout, stderr *os.File) int {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stdout, Usage)
		return 0
	}
	if len(args) == 0 || args[0] == "" || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, Usage)
		return 1
	}
	sock := getenv(SockVar)
	if sock == "" {
		if t := getenv(ToolVar); t != "" {
			fmt.Fprintf(stderr, "become: you are already acting as tool %s; exit to return to your own shell first\n", t)
		} else {
			fmt.Fprintln(stderr, "become: not available in this session: it works in your own interactive shell opened with ssh (from anywhere: ssh -t HOST become TOOL)")
		}
		return 1
	}
	req := Request{Tool: args[0], Command: strings.Join(args[1:], " ")}
	inFd, outFd := int(stdin.Fd()), int(stdout.Fd())
	if term.IsTerminal(inFd) && term.IsTerminal(outFd) {
		req.TTY = true
		req.Term = getenv("TERM")
		if w, h, err := term.GetSize(outFd); err == nil {
			req.Cols, req.Rows = dim(w), dim(h)
		}
	}
	payload, err := req.Marshal()
	if err != nil {
		fmt.Fprintf(stderr, "become: %v\n", err)
		return 1
	}

	nc, err := dial(sock, startWait)
	if err != nil {
		fmt.Fprintf(stderr, "become: bastion's become service is not available in this shell (%s=%s: %v); log in again to get it\n", SockVar, sock, unwrapOp(err))
		return 1
	}
	defer nc.Close()
	c := NewConn(nc)
	if err := c.WriteFrame(FrameRequest, payload); err != nil {
		fmt.Fprintf(stderr, "become: sending the request to bastion: %v\n", unwrapOp(err))
		return 255
	}
	t, p, err := c.ReadFrame()
	if err != nil || t != FrameReply {
		fmt.Fprintln(stderr, "become: bastion did not answer the request (connection lost)")
		return 255
	}
	reply, err := ParseReply(p)
	if err != nil {
		fmt.Fprintf(stderr, "become: %v\n", err)
		return 255
	}
	if !reply.OK {
		fmt.Fprintf(stderr, "become: %s\n", reply.Message)
		return 1
	}

	// From here, the terminal is the tool session's.
	restore := func() {}
	if req.TTY {
		if old, err := term.MakeRaw(inFd); err == nil {
			restore = func() { _ = term.Restore(inFd, old) }
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGWINCH, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	go sendInput(c, stdin) // ends with the process; the process ends with Main

	type result struct {
		exit Exit
		err  error
	}
	done := make(chan result, 1)
	go func() {
		for {
			t, p, err := c.ReadFrame()
			if err != nil {
				done <- result{err: err}
				return
			}
			switch t {
			case FrameStdout:
				_, _ = stdout.Write(p)
			case FrameStderr:
				_, _ = stderr.Write(p)
			case FrameExit:
				e, err := ParseExit(p)
				done <- result{exit: e, err: err}
				return
			default:
				done <- result{err: fmt.Errorf("%w: unexpected type %d", ErrFrame, t)}
				return
			}
		}
	}()

	for {
		select {
		case r := <-done:
			restore()
			if r.err != nil {
				fmt.Fprintln(stderr, "become: connection to bastion lost")
				return 255
			}
			return report(r.exit, stderr)
		case s := <-sigs:
			switch s {
			case syscall.SIGWINCH:
				if w, h, err := term.GetSize(outFd); err == nil && req.TTY {
					_ = c.WriteFrame(FrameResize, Resize(dim(w), dim(h)))
				}
			case syscall.SIGINT, syscall.SIGQUIT:
				// Without a terminal of its own (in raw mode, ^C is
				// input), the tool's process gets what this one got.
				name := strings.TrimPrefix(unix.SignalName(s.(syscall.Signal)), "SIG")
				_ = c.WriteFrame(FrameSignal, []byte(name))
			default:
				// TERM, HUP: this command is going away; closing the
				// connection hangs the tool's session up.
				restore()
				return 128 + int(s.(syscall.Signal))
			}
		}
	}
}

// sendInput relays stdin as frames, then an EOF frame.
func sendInput(c *Conn, stdin io.Reader) {
	buf := make([]byte, MaxData)
	for {
		n, err := stdin.Read(buf)
		if n > 0 {
			if werr := c.WriteFrame(FrameStdin, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = c.WriteFrame(FrameEOF, nil)
			return
		}
	}
}

// report prints what bastion or a shell would say about how the tool's
// session ended and returns the exit status to use.
func report(e Exit, stderr io.Writer) int {
	if e.Message != "" {
		fmt.Fprintf(stderr, "bastion: %s\n", e.Message)
	}
	if e.Signal == "" {
		return e.Code
	}
	n := signalNumber(e.Signal)
	if line := SignalLine(e.Signal, e.CoreDumped); line != "" {
		fmt.Fprintln(stderr, line)
	}
	if n == 0 {
		return 255
	}
	return 128 + n
}

// SignalLine is what an interactive shell prints for a foreground job
// killed by the signal named sig ("TERM": "Terminated"; "SEGV" with a core:
// "Segmentation fault (core dumped)"); "" for INT and PIPE, which shells
// leave silent.
func SignalLine(sig string, core bool) string {
	if sig == "INT" || sig == "PIPE" {
		return ""
	}
	n := signalNumber(sig)
	line := "Signal " + sig
	if n != 0 {
		if d := syscall.Signal(n).String(); d != "" && !strings.HasPrefix(d, "signal ") {
			line = strings.ToUpper(d[:1]) + d[1:]
		} else {
			line = "Signal " + strconv.Itoa(n)
		}
	}
	if core {
		line += " (core dumped)"
	}
	return line
}

// signalNumber is the number of a signal named without SIG ("TERM"), or
// given as a number; 0 when unknown.
func signalNumber(name string) int {
	if n := unix.SignalNum("SIG" + name); n != 0 {
		return int(n)
	}
	if n, err := strconv.Atoi(name); err == nil && n > 0 && n < 128 {
		return n
	}
	return 0
}

func dim(n int) uint16 {
	if n < 0 {
		return 0
	}
	if n > 0xffff {
		return 0xffff
	}
	return uint16(n)
}

// unwrapOp drops net.OpError's "dial unix PATH:" prefix, already said.
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/bastion-ssh/bastion/session"
)

func (b *Backend) startPTY(ctx context.Context, cmd *exec.Cmd, r session.Request, done func(session.ExitStatus, error)) (session.Process, error) {
	master, tty, err := openPTY()
	if err != nil {
		return nil, err
	}
	setSize(master, r.TTY.Size)
	applyModes(tty, r.TTY.Modes)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0
	err = cmd.Start()
	tty.Close()
	if err != nil {
		master.Close()
		return nil, startError(cmd, err)
	}
	b.readStdin(master, r.Stdin, func() {})
	out := b.copyOutput(r.Stdout, master)
	p := newProcess(b, cmd, master)
	p.afterExit(ctx, func() {
		st, err := p.reap()
		// Drain what the process wrote before it exited; a background
		// job still holding the terminal does not keep the session open.
		t := time.NewTimer(drainAfterExit)
		select {
		case <-out.done:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		_ = master.SetReadDeadline(time.Now())
		_ = master.SetWriteDeadline(time.Now())
		out.stop()
		master.Close()
		done(st, err)
	})
	return p, nil
}

// ptyOutput copies a pty master's output to the session. While the
// terminal is quiet it costs no goroutine: the master sits in the exit
// watcher's epoll set, and a goroutine runs only while there is output
// to copy (a burst), ending when a read would block. An idle shell would
// otherwise park a goroutine and its stack in Read for as long as the
// session lasts.
type ptyOutput struct {
	b       *Backend
	dst     io.Writer
	rc      syscall.RawConn
	arm     func() error // ask for the next readiness event
	unwatch func()
	stopped atomic.Bool

	mu       sync.Mutex
	running  bool // a burst is copying
	finished bool
	done     chan struct{} // closed at EOF (EIO: every slave fd closed), on an error, or once stopped
}

var ptyBufs = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

// copyOutput starts copying master to dst; without the epoll watcher it
// falls back to a goroutine blocked in Read.
func (b *Backend) copyOutput(dst io.Writer, master *os.File) *ptyOutput {
	p := &ptyOutput{b: b, dst: dst, done: make(chan struct{})}
	rc, err := master.SyscallConn()
	if err == nil {
		var fd int
		if cerr := rc.Control(func(f uintptr) { fd = int(f) }); cerr != nil {
			err = cerr
		}
		if err == nil {
			p.rc = rc
			// Under mu: the master may be readable at once, and ready
			// (which takes mu) must find arm and unwatch set.
			p.mu.Lock()
			p.arm, p.unwatch, err = b.exits.watchReadable(fd, p.ready)
			p.mu.Unlock()
		}
	}
	if err != nil {
		p.unwatch = func() {}
		p.running = true
		b.readers.Add(1)
		go func() {
			defer b.readers.Done()
			_, _ = session.Copy(dst, master, nil) // ends with EIO once every slave fd is closed
			p.end()
		}()
	}
	return p
}

// ready runs on the watcher's goroutine when the master has output.
func (p *ptyOutput) ready() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running || p.finished {
		return
	}
	p.running = true
	p.b.readers.Add(1)
	go p.burst()
}

// burst copies until a read would block (then waits for readiness
// again), the terminal ends, or the copy is stopped.
func (p *ptyOutput) burst() {
	defer p.b.readers.Done()
	bp := ptyBufs.Get().(*[]byte)
	defer ptyBufs.Put(bp)
	buf := *bp
	for !p.stopped.Load() {
		var n int
		var rerr error
		if err := p.rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return true // never park: readiness comes from the watcher
		}); err != nil {
			break // the master was closed
		}
		if n > 0 {
			if _, err := p.dst.Write(buf[:n]); err != nil {
				break
			}
			continue
		}
		switch rerr {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			p.mu.Lock()
			if !p.stopped.Load() && p.arm() == nil {
				p.running = false
				p.mu.Unlock()
				return
			}
			p.running = false
			p.finishLocked()
			p.mu.Unlock()
			return
		}
		break // EIO once every slave fd is closed, or EOF
	}
	p.end()
}

func (p *ptyOutput) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running = false
	p.finishLocked()
}

func (p *ptyOutput) finishLocked() {
	if !p.finished {
		p.finished = true
		p.unwatch()
		close(p.done)
	}
}

// stop ends the copy and waits for a burst in progress (a write to a
// session whose client does not read waits until the channel closes).
func (p *ptyOutput) stop() {
	p.stopped.Store(true)
	p.mu.Lock()
	if !p.running {
		p.finishLocked()
	}
	p.mu.Unlock()
	<-p.done
}

// openPTY opens a pty pair and makes the master non-blocking, so that
// reads and writes on it honour deadlines and never pin a thread.
func openPTY() (master, tty *os.File, err error) {
	m, t, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	raw, err := m.SyscallConn()
	if err != nil {
		m.Close()
		t.Close()
		return nil, nil, fmt.Errorf("pty fd: %w", err)
	}
	var dup int
	var derr error
	cerr := raw.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	m.Close()
	if cerr != nil || derr != nil {
		t.Close()
		return nil, nil, fmt.Errorf("dup pty: %w", errors.Join(cerr, derr))
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		t.Close()
		return nil, nil, fmt.Errorf("pty nonblock: %w", err)
	}
	return os.NewFile(uintptr(dup), "/dev/ptmx"), t, nil
}

func setSize(master *os.File, ws session.WindowSize) {
	if ws.Cols == 0 || ws.Rows == 0 {
		return
	}
	_ = pty.Setsize(master, &pty.Winsize{Cols: ws.Cols, Rows: ws.Rows})
}

// RFC 4254 section 8 opcodes we apply to the terminal.
var modeChars = map[uint8]int{
	1: unix.VINTR, 2: unix.VQUIT, 3: unix.VERASE, 4: unix.VKILL, 5: unix.VEOF,
	6: unix.VEOL, 7: unix.VEOL2, 8: unix.VSTART, 9: unix.VSTOP, 10: unix.VSUSP,
	12: unix.VREPRINT, 13: unix.VWERASE, 14: unix.VLNEXT,
}

var modeFlags = []struct {
	op   uint8
	bit  uint32
	kind int // 0 iflag, 1 lflag, 2 oflag
}{
	{op: 30, bit: unix.IGNPAR}, {op: 31, bit: unix.PARMRK}, {op: 32, bit: unix.INPCK},
	{op: 33, bit: unix.ISTRIP}, {op: 34, bit: unix.INLCR}, {op: 35, bit: unix.IGNCR},
	{op: 36, bit: unix.ICRNL}, {op: 37, bit: unix.IUCLC}, {op: 38, bit: unix.IXON},
	{op: 39, bit: unix.IXANY}, {op: 40, bit: unix.IXOFF}, {op: 41, bit: unix.IMAXBEL},
	{op: 42, bit: unix.IUTF8},
	{op: 50, bit: unix.ISIG, kind: 1}, {op: 51, bit: unix.ICANON, kind: 1},
	{op: 53, bit: unix.ECHO, kind: 1}, {op: 54, bit: unix.ECHOE, kind: 1},
	{op: 55, bit: unix.ECHOK, kind: 1}, {op: 56, bit: unix.ECHONL, kind: 1},
	{op: 57, bit: unix.NOFLSH, kind: 1}, {op: 58, bit: unix.TOSTOP, kind: 1},
	{op: 59, bit: unix.IEXTEN, kind: 1}, {op: 60, bit: unix.ECHOCTL, kind: 1},
	{op: 61, bit: unix.ECHOKE, kind: 1}, {op: 62, bit: unix.PENDIN, kind: 1},
	{op: 70, bit: unix.OPOST, kind: 2}, {op: 71, bit: unix.OLCUC, kind: 2},
	{op: 72, bit: unix.ONLCR, kind: 2}, {op: 73, bit: unix.OCRNL, kind: 2},
	{op: 74, bit: unix.ONOCR, kind: 2}, {op: 75, bit: unix.ONLRET, kind: 2},
}

// applyModes applies the client's terminal modes, as sshd does, so that
// e.g. the erase character matches the client's keyboard.
func applyModes(tty *os.File, modes map[uint8]uint32) {
	if len(modes) == 0 {
		return
	}
	t, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		return
	}
	for op, idx := range modeChars {
		if v, ok := modes[op]; ok {
			t.Cc[idx] = uint8(v)
		}
	}
	for _, m := range modeFlags {
		v, ok := modes[m.op]
		if !ok {
			continue
		}
		f := &t.Iflag
		switch m.kind {
		case 1:
			f = &t.Lflag
		case 2:
			f = &t.Oflag
		}
		if v != 0 {
			*f |= m.bit
		} else {
			*f &^= m.bit
		}
	}
	_ = unix.IoctlSetTermios(int(tty.Fd()), unix.TCSETS, t)
}

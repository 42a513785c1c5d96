package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bastion-ssh/bastion/session"
)

// DefaultPath is PATH for session processes.
const DefaultPath = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"

// killGrace is how long a process has between SIGHUP and SIGKILL when its
// session is cancelled.
const killGrace = 2 * time.Second

// drainAfterExit bounds how long output of a pty session is read after
// the process exited, when a background job still holds the terminal.
const drainAfterExit = 250 * time.Millisecond

// Backend runs sessions as local processes.
type Backend struct {
	log    *slog.Logger
	asRoot bool
	dialer net.Dialer

	// readers are the stdin readers that may outlive a Run (see
	// session.Request.Stdin); Close waits for them.
	readers sync.WaitGroup
	// exits tells supervise when a process has exited.
	exits exitWatcher
}

// New returns a local backend.
func New(log *slog.Logger) *Backend {
	return &Backend{log: log, asRoot: os.Geteuid() == 0}
}

// Close stops the exit watcher and waits for the stdin readers of
// finished sessions; their streams must have been closed.
func (b *Backend) Close() {
	b.exits.close()
	b.readers.Wait()
}

// SwitchesUser reports whether processes run as the account's uid (true
// when bastion runs as root) or as bastion's own user.
func (b *Backend) SwitchesUser() bool { return b.asRoot }

// Dial connects to address from this host.
func (b *Backend) Dial(ctx context.Context, _ session.Request, network, address string) (net.Conn, error) {
	c, err := b.dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, address, err)
	}
	return c, nil
}

// Run starts r's process and supervises it until it exits: Start, with
// r.Signals and r.TTY.Resize served until done.
func (b *Backend) Run(ctx context.Context, r session.Request) (session.ExitStatus, error) {
	type result struct {
		st  session.ExitStatus
		err error
	}
	ended := make(chan result, 1)
	p, err := b.Start(ctx, r, func(st session.ExitStatus, err error) { ended <- result{st, err} })
	if err != nil {
		return session.ExitStatus{}, err
	}
	signals := r.Signals
	var resize <-chan session.WindowSize
	if r.TTY != nil {
		resize = r.TTY.Resize
	}
	for {
		select {
		case res := <-ended:
			return res.st, res.err
		case s, ok := <-signals:
			if !ok {
				signals = nil
				continue
			}
			p.Signal(s)
		case ws, ok := <-resize:
			if !ok {
				resize = nil
				continue
			}
			p.Resize(ws)
		}
	}
}

// Start implements session.Starter: no goroutine waits for the process.
// Its exit comes from the exit watcher's epoll set, the session's end
// (ctx) through context.AfterFunc, and its output and input are copied
// as with Run; done runs on a goroutine that exists only once the
// process has exited (it drains the output and reaps the process).
func (b *Backend) Start(ctx context.Context, r session.Request, done func(session.ExitStatus, error)) (session.Process, error) {
	cmd, err := b.command(r)
	if err != nil {
		return nil, err
	}
	if r.TTY != nil {
		return b.startPTY(ctx, cmd, r, done)
	}
	return b.startPipes(ctx, cmd, r, done)
}

func (b *Backend) command(r session.Request) (*exec.Cmd, error) {
	acct := r.Account
	shell := acct.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	var cmd *exec.Cmd
	if r.Command == "" {
		// A login shell: argv[0] starts with '-'.
		cmd = &exec.Cmd{Path: shell, Args: []string{"-" + filepath.Base(shell)}}
	} else {
		cmd = &exec.Cmd{Path: shell, Args: []string{filepath.Base(shell), "-c", r.Command}}
	}
	env := map[string]string{
		"HOME":    acct.Home,
		"USER":    acct.Name,
		"LOGNAME": acct.Name,
		"SHELL":   shell,
		"PATH":    DefaultPath,
	}
	for k, v := range r.Env {
		env[k] = v
	}
	if r.TTY != nil && r.TTY.Term != "" {
		env["TERM"] = r.TTY.Term
	}
	cmd.Env = make([]string, 0, len(env))
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	sort.Strings(cmd.Env)
	cmd.Dir = acct.Home
	if st, err := os.Stat(acct.Home); err != nil || !st.IsDir() {
		cmd.Dir = "/"
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if b.asRoot {
		if acct.UID < 0 || acct.GID < 0 {
			return nil, fmt.Errorf("account %s has no uid/gid", acct.Name)
		}
		groups := make([]uint32, 0, len(acct.GIDs))
		for _, g := range acct.GIDs {
			groups = append(groups, uint32(g))
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{
			Uid: uint32(acct.UID), Gid: uint32(acct.GID), Groups: groups,
		}
	}
	return cmd, nil
}

// readStdin copies the session's input to the process in a goroutine
// owned by the backend (it may outlive Run; see session.Request.Stdin).
// done runs when the input ends or the process stops taking it.
func (b *Backend) readStdin(dst io.Writer, src io.Reader, done func()) {
	b.readers.Add(1)
	go func() {
		defer b.readers.Done()
		_, _ = session.Copy(dst, src, nil)
		done()
	}()
}

// process is a started session process. Signals, the hang-up when the
// session ends and the window size reach it only until it has exited
// (under mu), so that none reaches another process that reuses its pid
// once it is reaped.
type process struct {
	b      *Backend
	cmd    *exec.Cmd
	pid    int
	master *os.File // the pty's; nil without one

	mu       sync.Mutex
	exited   bool
	killer   *time.Timer // SIGKILL after killGrace, once hung up
	stopHang func() bool // cancels the hang-up on the session's end
}

func newProcess(b *Backend, cmd *exec.Cmd, master *os.File) *process {
	// The process has its environment; the Cmd is kept until Wait, for
	// as long as the session lasts, and needs it no more.
	cmd.Env = nil
	return &process{b: b, cmd: cmd, pid: cmd.Process.Pid, master: master}
}

// watch hangs the process group up when ctx ends (then kills it after
// killGrace) and runs exited, which must not block, once the process
// has exited.
func (p *process) watch(ctx context.Context, exited func()) {
	p.mu.Lock()
	p.stopHang = context.AfterFunc(ctx, p.hangUp)
	p.mu.Unlock()
	p.b.exits.onExit(p.pid, exited)
}

func (p *process) hangUp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return
	}
	_ = syscall.Kill(-p.pid, syscall.SIGHUP)
	_ = syscall.Kill(-p.pid, syscall.SIGCONT)
	p.killer = time.AfterFunc(killGrace, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.exited {
			_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		}
	})
}

// Signal implements session.Process.
func (p *process) Signal(s session.Signal) {
	sig, known := signalNumber[s]
	if !known {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited {
		_ = syscall.Kill(p.pid, sig)
	}
}

// Resize implements session.Process.
func (p *process) Resize(ws session.WindowSize) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.exited && p.master != nil {
		setSize(p.master, ws)
	}
}

// reap runs once the process has exited: no signal reaches its pid or
// group from now on, and cmd.Wait reaps it.
func (p *process) reap() (session.ExitStatus, error) {
	p.mu.Lock()
	p.exited = true
	if p.stopHang != nil {
		p.stopHang()
	}
	if p.killer != nil {
		p.killer.Stop()
	}
	p.mu.Unlock()
	return exitStatus(p.cmd, p.cmd.Wait())
}

// afterExit runs f on a goroutine owned by the backend (Close waits for
// it) once p has exited.
func (p *process) afterExit(ctx context.Context, f func()) {
	p.b.readers.Add(1) // before the process can exit: Close's Wait cannot have begun
	p.watch(ctx, func() {
		go func() {
			defer p.b.readers.Done()
			f()
		}()
	})
}

// waitExit returns a channel closed when the child pid has exited (it is
// then reaped by cmd.Wait). It waits on a pidfd through the runtime's
// poller, so a waiting session costs a parked goroutine, not an OS thread
// blocked in wait(2).
func waitExit(pid int) <-chan struct{} {
	ch := make(chan struct{})
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		// Old kernel: fall back to a blocking wait without reaping.
		go func() {
			var info unix.Siginfo
			_ = unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			close(ch)
		}()
		return ch
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	go func() {
		defer close(ch)
		defer f.Close()
		rc, err := f.SyscallConn()
		if err != nil {
			return
		}
		// The pidfd becomes readable when the process exits; asking
		// waitid (without reaping) makes a missed wake-up impossible.
		_ = rc.Read(func(pfd uintptr) bool {
			var info unix.Siginfo
			err := unix.Waitid(unix.P_PIDFD, int(pfd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
			return err != nil || info.Signo != 0
		})
	}()
	return ch
}

func exitStatus(cmd *exec.Cmd, err error) (session.ExitStatus, error) {
	if cmd.ProcessState == nil {
		return session.ExitStatus{}, fmt.Errorf("wait: %w", err)
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return session.ExitStatus{}, fmt.Errorf("wait: %w", err)
	}
	if ws.Signaled() {
		return session.ExitStatus{Signal: signalName(ws.Signal()), CoreDumped: ws.CoreDump()}, nil
	}
	return session.ExitStatus{Code: ws.ExitStatus()}, nil
}

func (b *Backend) startPipes(ctx context.Context, cmd *exec.Cmd, r session.Request, done func(session.ExitStatus, error)) (session.Process, error) {
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW)
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW, stdoutR, stdoutW)
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, stderrW
	err = cmd.Start()
	closeAll(stdinR, stdoutW, stderrW)
	if err != nil {
		closeAll(stdinW, stdoutR, stderrR)
		return nil, startError(cmd, err)
	}
	b.readStdin(stdinW, r.Stdin, func() { stdinW.Close() }) // EOF for the process

	var out sync.WaitGroup
	out.Add(2)
	b.readers.Add(2)
	go func() {
		defer b.readers.Done()
		defer out.Done()
		_, _ = session.Copy(r.Stdout, stdoutR, nil)
		stdoutR.Close()
	}()
	stderr := r.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	go func() {
		defer b.readers.Done()
		defer out.Done()
		_, _ = session.Copy(stderr, stderrR, nil)
		stderrR.Close()
	}()
	p := newProcess(b, cmd, nil)
	p.afterExit(ctx, func() {
		st, err := p.reap()
		// The process is gone: stop feeding it. Output is read to EOF
		// (like sshd, a background job that keeps stdout open keeps the
		// session open) unless the session is cancelled.
		stdinW.Close()
		outDone := make(chan struct{})
		go func() { out.Wait(); close(outDone) }()
		select {
		case <-outDone:
		case <-ctx.Done():
			_ = stdoutR.SetReadDeadline(time.Now())
			_ = stderrR.SetReadDeadline(time.Now())
			<-outDone
		}
		done(st, err)
	})
	return p, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

func startError(cmd *exec.Cmd, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return session.UserErrorf(err, fmt.Sprintf("cannot start %s: no such file", cmd.Path))
	}
	return fmt.Errorf("start %s: %w", cmd.Path, err)
}

// signalNumber maps RFC 4254 signal names to numbers.
var signalNumber = map[session.Signal]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE,
	"HUP": syscall.SIGHUP, "ILL": syscall.SIGILL, "INT": syscall.SIGINT,
	"KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE, "QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

// signalName is the POSIX name of s without the SIG prefix ("TERM",
// "VTALRM"), or its number for a signal without a name (real-time ones).
// sshd decides what goes on the wire.
func signalName(s syscall.Signal) session.Signal {
	if name := unix.SignalName(s); name != "" {
		return session.Signal(strings.TrimPrefix(name, "SIG"))
	}
	return session.Signal(strconv.Itoa(int(s)))
}

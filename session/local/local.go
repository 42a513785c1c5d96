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
	"strings"
	"sync"
	"syscall"
	"time"

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
}

// New returns a local backend.
func New(log *slog.Logger) *Backend {
	return &Backend{log: log, asRoot: os.Geteuid() == 0}
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

// Run starts r's process and supervises it until it exits.
func (b *Backend) Run(ctx context.Context, r session.Request) (session.ExitStatus, error) {
	cmd, err := b.command(r)
	if err != nil {
		r.Stdin.Close()
		return session.ExitStatus{}, err
	}
	if r.TTY != nil {
		return b.runPTY(ctx, cmd, r)
	}
	return b.runPipes(ctx, cmd, r)
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

// supervise waits for cmd, kills its process group when ctx ends, and
// forwards signals. It returns when the process has exited.
func (b *Backend) supervise(ctx context.Context, cmd *exec.Cmd, signals <-chan session.Signal) (session.ExitStatus, error) {
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	pid := cmd.Process.Pid
	var killTimer <-chan time.Time
	for {
		select {
		case err := <-waited:
			return exitStatus(cmd, err)
		case <-ctx.Done():
			if killTimer == nil {
				_ = syscall.Kill(-pid, syscall.SIGHUP)
				_ = syscall.Kill(-pid, syscall.SIGCONT)
				killTimer = time.After(killGrace)
			}
			ctx = context.WithoutCancel(ctx) // fire once
		case <-killTimer:
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		case s, ok := <-signals:
			if !ok {
				signals = nil
				continue
			}
			if sig, known := signalNumber[s]; known {
				_ = syscall.Kill(pid, sig)
			}
		}
	}
}

func exitStatus(cmd *exec.Cmd, err error) (session.ExitStatus, error) {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return session.ExitStatus{}, fmt.Errorf("wait: %w", err)
	}
	if ws.Signaled() {
		return session.ExitStatus{Signal: signalName(ws.Signal()), CoreDumped: ws.CoreDump()}, nil
	}
	return session.ExitStatus{Code: ws.ExitStatus()}, nil
}

func (b *Backend) runPipes(ctx context.Context, cmd *exec.Cmd, r session.Request) (session.ExitStatus, error) {
	defer r.Stdin.Close()
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return session.ExitStatus{}, fmt.Errorf("stdin pipe: %w", err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW)
		return session.ExitStatus{}, fmt.Errorf("stdout pipe: %w", err)
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW, stdoutR, stdoutW)
		return session.ExitStatus{}, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, stderrW
	err = cmd.Start()
	closeAll(stdinR, stdoutW, stderrW)
	if err != nil {
		closeAll(stdinW, stdoutR, stderrR)
		return session.ExitStatus{}, startError(cmd, err)
	}

	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		copyBuffered(stdinW, r.Stdin)
		stdinW.Close() // EOF for the process
	}()
	go func() {
		defer wg.Done()
		copyBuffered(r.Stdout, stdoutR)
		stdoutR.Close()
	}()
	stderr := r.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	go func() {
		defer wg.Done()
		copyBuffered(stderr, stderrR)
		stderrR.Close()
	}()
	st, err := b.supervise(ctx, cmd, r.Signals)
	// Output is read to EOF (like sshd, a background job that keeps
	// stdout open keeps the session open) unless the session is cancelled.
	outDone := make(chan struct{})
	go func() { wg.Wait(); close(outDone) }()
	r.Stdin.Close()
	select {
	case <-outDone:
	case <-ctx.Done():
		stdoutR.SetReadDeadline(time.Now())
		stderrR.SetReadDeadline(time.Now())
		stdinW.SetWriteDeadline(time.Now())
		<-outDone
	}
	return st, err
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

func signalName(s syscall.Signal) session.Signal {
	for name, n := range signalNumber {
		if n == s {
			return name
		}
	}
	// Not an RFC 4254 name: report it the way OpenSSH does.
	return session.Signal(strings.TrimPrefix(strings.ToUpper(unixSignalName(s)), "SIG") + "@openssh.com")
}

package session

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/bastion-ssh/bastion/auth"
)

// WindowSize is a terminal size in characters.
type WindowSize struct {
	Cols, Rows uint16
}

// TTY describes the pseudo-terminal a session asked for.
type TTY struct {
	Term string
	Size WindowSize
	// Resize delivers window changes; the backend stops reading it when
	// Run returns. The sender must never block on it (use a buffered
	// channel and drop stale sizes).
	Resize <-chan WindowSize
	// Modes are the RFC 4254 terminal modes (opcode → value).
	Modes map[uint8]uint32
}

// Signal is a POSIX signal name without the SIG prefix ("INT", "TERM").
type Signal string

// Request is one process to run.
type Request struct {
	// User is the person who authenticated.
	User *auth.User
	// Account is the identity the process runs as: the user's own
	// account, or a tool account after become / user+tool.
	Account auth.Account
	// Command is run by the account's shell with -c; empty means an
	// interactive login shell.
	Command string
	// Env holds extra variables (LANG, SSH_CONNECTION, ...); the
	// backend sets HOME, USER, LOGNAME, SHELL, PATH, and TERM from TTY.
	Env map[string]string
	// TTY is nil when no pty was requested.
	TTY *TTY
	// Signals delivers signals to the process; may be nil.
	Signals <-chan Signal

	// Stdin is the process's input; io.EOF closes the process's stdin.
	// When Run returns, a Read on Stdin may still be pending (a client
	// that never sends EOF): the backend's reader stops as soon as that
	// Read returns, and the caller makes it return by closing the
	// stream. Backends own that reader and wait for it in Close.
	Stdin  io.Reader
	Stdout io.Writer
	// Stderr is ignored when TTY is set (the pty merges the streams).
	Stderr io.Writer
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Code is the exit status when Signal is empty.
	Code int
	// Signal is set when the process was killed by a signal.
	Signal     Signal
	CoreDumped bool
}

// Backend runs processes and dials connections for accounts.
type Backend interface {
	// Run starts the process, streams until it exits and its output is
	// drained, and reports how it ended. Cancelling ctx kills the
	// process. Run returns an error only if the process could not be
	// started or supervised; errors meant for the user are UserErrors.
	Run(ctx context.Context, r Request) (ExitStatus, error)
	// Dial opens a connection to address on behalf of r.Account (ssh -L).
	// Stdin and the other streams of r are unused.
	// The caller has already applied the forwarding policy.
	Dial(ctx context.Context, r Request, network, address string) (net.Conn, error)
}

// Starter is optional for a Backend: Start does what Run does, but
// returns as soon as the process has started (or failed to), and done
// runs once, later and on a goroutine of the backend's, with what Run
// would have returned; it is not called when Start returns an error. The
// caller then parks no goroutine for as long as the process lives (an
// idle shell can last for days). Signals and window changes go to the
// returned Process: Start does not read r.Signals or r.TTY.Resize.
type Starter interface {
	Start(ctx context.Context, r Request, done func(ExitStatus, error)) (Process, error)
}

// Process is a process started by Starter.Start. Its methods must not
// block, and do nothing once the process has exited.
type Process interface {
	Signal(Signal)
	Resize(WindowSize)
}

// Listener is implemented by backends that can accept connections on an
// account's behalf: ssh -R, agent forwarding, become typed in the shell.
//
// Network "tcp" listens on address host:port on the account's own
// loopback (the pod's loopback in kube); host must be a loopback address
// or "localhost", port 0 allocates one and Addr reports the real port.
// Network "unix" with address "" listens on a fresh socket private to the
// account (mode 0600 in a 0700 directory owned by the account's uid);
// Addr().String() is its path as the account's processes see it.
//
// The listener lives until ctx ends or Close is called, whichever comes
// first; closing it removes the socket. Accept returns net.ErrClosed
// (wrapped) once it is closed. Errors meant for the user are UserErrors.
type Listener interface {
	Listen(ctx context.Context, r Request, network, address string) (net.Listener, error)
}

// AcceptWatcher is optional for a net.Listener from Listener.Listen.
// WatchAccept calls ready (which must not block) when a connection is
// waiting to be accepted, and after that only once arm has been called
// again; stop ends the watch and comes before Close. The listener's
// owner then parks no goroutine in Accept while nobody connects (an idle
// shell's become socket).
type AcceptWatcher interface {
	WatchAccept(ready func()) (arm func() error, stop func(), err error)
}

// Starting is optional for a net.Listener from Listener.Listen: its
// address is known when Listen returns, but connections may be refused
// until Ready returns nil (the kube backend's unix socket, whose relay
// starts alongside the shell). Ready returns why the listener could not
// start, or ctx's error. Owners that hand the address to a client that
// does not retry (ssh-add) wait for Ready first.
type Starting interface {
	Ready(ctx context.Context) error
}

// ErrForbidden marks a Dial refused by the backend's own policy (another
// account's namespace or pod), as opposed to one that failed.
var ErrForbidden = errors.New("forbidden by policy")

// UserError is an error whose message is meant for the SSH user: one
// line saying what went wrong and what to do.
type UserError struct {
	Msg string
	Err error // the detail for the log; may be nil
}

func (e *UserError) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *UserError) Unwrap() error { return e.Err }

// UserErrorf wraps err with a message for the user.
func UserErrorf(err error, msg string) error { return &UserError{Msg: msg, Err: err} }

// UserMessage returns the user-facing line for err, and whether err
// carried one.
func UserMessage(err error) (string, bool) {
	var ue *UserError
	if errors.As(err, &ue) {
		return ue.Msg, true
	}
	return "", false
}

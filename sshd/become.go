package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/internal/become"
	"github.com/bastion-ssh/bastion/internal/clip"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session"
)

// become typed in a shell (internal/become has the protocol).
//
// Each interactive shell of a person (a "shell" request, no forced
// command, not a user+tool login) gets a unix socket private to the
// person's account from the backend (session.Listener), whose path is in
// the shell's environment. Only an interactive shell: that is where
// people type become, and a listener in a pod costs the kube backend a
// relay process, which exec sessions, scp, sftp and rsync (most sessions)
// never need. A request arriving on the socket is decided exactly like
// `ssh host become TOOL` (becomeAccount: the person is the connection's
// authenticated user, never anything the shell says) and runs the tool's
// session through the backend with the connection's streams as its
// terminal. A tool's session (and a user+tool login) gets no socket, so
// become there is refused: a socket owned by the tool's uid would let
// every process of the tool (its other maintainers, its jobs) become
// whatever this person maintains.

const (
	// becomeRequestTimeout bounds the wait for a connection's request.
	becomeRequestTimeout = 10 * time.Second
	// becomeListenTimeout bounds how long the socket may delay the prompt.
	becomeListenTimeout = 15 * time.Second
)

var errBecomeClientGone = errors.New("the become command ended")

// becomeServer serves one shell's socket.
type becomeServer struct {
	s      *sessionChan
	l      net.Listener
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	active atomic.Int32

	// With a listener that says when a connection waits
	// (session.AcceptWatcher), no goroutine waits in Accept.
	mu      sync.Mutex
	closed  bool
	arm     func() error
	unwatch func()
}

// wantsBecome reports whether a session of kind gets a become socket.
func (s *sessionChan) wantsBecome(kind string, original *string) bool {
	c := s.c
	_, ok := c.listener()
	return ok && kind == "shell" && original == nil && c.login.Tool == "" && c.account.Name == c.user.Name
}

// startBecome listens for become requests for the shell req and puts the
// socket's path into req.Env. It returns nil (and the shell goes on
// without become) when the backend cannot listen.
func (s *sessionChan) startBecome(ctx context.Context, req session.Request) *becomeServer {
	// The listener lives with lctx; becomeListenTimeout bounds only its
	// start.
	lctx, cancel := context.WithCancelCause(ctx)
	slow := time.AfterFunc(becomeListenTimeout, func() {
		cancel(fmt.Errorf("listening took more than %s", becomeListenTimeout))
	})
	bl, _ := s.c.listener()
	began := time.Now()
	l, err := bl.Listen(lctx, req, "unix", "")
	if !slow.Stop() && err == nil {
		l.Close()
		err = context.Cause(lctx)
	}
	if err != nil {
		cancel(err)
		s.log.Warn("become socket unavailable; the shell starts without become", "err", err)
		return nil
	}
	// The listener closes itself when lctx ends (session.Listener); stop
	// also closes it.
	s.log.Debug("become socket ready", "socket", l.Addr().String(), "took", time.Since(began).Round(time.Millisecond))
	bs := &becomeServer{s: s, l: l, ctx: lctx, cancel: cancel}
	req.Env[become.SockVar] = l.Addr().String()
	if aw, ok := l.(session.AcceptWatcher); ok && bs.watch(aw) {
		return bs
	}
	bs.wg.Add(1)
	go bs.accept()
	return bs
}

// watch accepts on a goroutine started only when a connection waits: an
// idle shell's socket then costs no goroutine (and its stack) for as
// long as the shell lasts. False when the listener cannot be watched.
func (bs *becomeServer) watch(aw session.AcceptWatcher) bool {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	arm, unwatch, err := aw.WatchAccept(bs.ready)
	if err != nil {
		return false
	}
	bs.arm, bs.unwatch = arm, unwatch
	return true
}

// ready runs on the backend's watcher when a connection waits; it must
// not block.
func (bs *becomeServer) ready() {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if bs.closed {
		return
	}
	bs.wg.Add(1)
	go bs.acceptOne()
}

// acceptOne accepts the waiting connection, asks for the next one and
// serves it.
func (bs *becomeServer) acceptOne() {
	defer bs.wg.Done()
	nc, err := bs.l.Accept()
	if err != nil {
		if bs.ctx.Err() == nil {
			bs.s.log.Warn("become socket failed; become is unavailable for the rest of this shell", "err", err)
		}
		return
	}
	defer nc.Close()
	bs.mu.Lock()
	if !bs.closed {
		if err := bs.arm(); err != nil {
			bs.s.log.Warn("become socket cannot be watched; become is unavailable for the rest of this shell", "err", err)
		}
	}
	bs.mu.Unlock()
	bs.serve(nc)
}

// stop ends the socket and every tool session started from it, and waits
// for them.
func (bs *becomeServer) stop(cause error) {
	bs.mu.Lock()
	bs.closed = true // no accept starts after this
	bs.mu.Unlock()
	if bs.unwatch != nil {
		bs.unwatch() // before the socket closes
	}
	bs.cancel(cause)
	bs.l.Close()
	bs.wg.Wait()
}

func (bs *becomeServer) accept() {
	defer bs.wg.Done()
	for {
		nc, err := bs.l.Accept()
		if err != nil {
			if bs.ctx.Err() == nil {
				bs.s.log.Warn("become socket failed; become is unavailable for the rest of this shell", "err", err)
			}
			return
		}
		bs.wg.Add(1)
		go func() {
			defer bs.wg.Done()
			defer nc.Close()
			bs.serve(nc)
		}()
	}
}

// serve answers one become request and runs the tool's session.
func (bs *becomeServer) serve(nc net.Conn) {
	s, c := bs.s, bs.s.c
	log := s.log.With("via", "shell")
	fc := become.NewConn(nc)
	refuse := func(msg string) { _ = fc.WriteFrame(become.FrameReply, become.Reply{Message: msg}.Marshal()) }

	// A connection gets becomeRequestTimeout to send its request.
	// Backends' connections need not support deadlines: close instead.
	timer := time.AfterFunc(becomeRequestTimeout, func() { nc.Close() })
	t, p, err := fc.ReadFrame()
	if !timer.Stop() || err != nil || t != become.FrameRequest {
		log.Info("become request unreadable", "type", t, "err", err)
		return
	}
	r, err := become.ParseRequest(p)
	if err != nil {
		log.Info("become request malformed", "err", err)
		refuse("malformed request (is bastion-helper older than bastion?)")
		return
	}
	lim := c.st.Limits
	if n := bs.active.Add(1); int(n) > lim.MaxSessionsPerConn {
		bs.active.Add(-1)
		log.Warn("become refused", "reason", "max_sessions_per_conn", "limit", lim.MaxSessionsPerConn)
		refuse(fmt.Sprintf("too many become sessions open in this shell (limit %d)", lim.MaxSessionsPerConn))
		return
	}
	defer bs.active.Add(-1)
	acct, err := c.becomeAccount(bs.ctx, log, r.Tool, r.Command, "shell")
	if err != nil {
		refuse(err.Error())
		return
	}
	if !c.srv.acquireUserSession(c.login.User, lim.MaxSessionsPerUser) {
		log.Warn("become refused", "reason", "max_sessions_per_user", "limit", lim.MaxSessionsPerUser)
		ops.SessionsRefused.WithLabelValues("max_sessions_per_user").Inc()
		refuse(fmt.Sprintf("%s has too many open sessions (limit %d); close some and try again", c.login.User, lim.MaxSessionsPerUser))
		return
	}
	defer c.srv.releaseUserSession(c.login.User)
	if err := fc.WriteFrame(become.FrameReply, become.Reply{OK: true}.Marshal()); err != nil {
		return
	}
	bs.run(nc, fc, r, acct, log)
}

// run runs the tool's session on the become connection: its stdin,
// window sizes and signals come from the client's frames; the session
// ends when the process does or when the client goes away.
func (bs *becomeServer) run(nc net.Conn, fc *become.Conn, r become.Request, acct auth.Account, log *slog.Logger) {
	s, c := bs.s, bs.s.c
	start := time.Now()
	ctx, cancel := context.WithCancelCause(bs.ctx)
	defer cancel(errors.New("become session ended"))
	// When the session is cut (the person's shell ended, the server
	// drains), a write to a client that does not read must not hang.
	stopClosing := context.AfterFunc(ctx, func() { nc.Close() })
	defer stopClosing()

	env := make(map[string]string, len(s.env)+4)
	for k, v := range s.env {
		env[k] = v
	}
	c.connEnv(env)
	env[become.ToolVar] = r.Tool
	resize := make(chan session.WindowSize, 1)
	signals := make(chan session.Signal, 4)
	var tty *session.TTY
	if r.TTY && !c.restrict.NoPTY {
		tty = &session.TTY{Term: r.Term, Size: session.WindowSize{Cols: r.Cols, Rows: r.Rows}, Resize: resize}
	}
	stdinR, stdinW := io.Pipe()
	req := session.Request{
		User:    c.user,
		Account: acct,
		Command: r.Command,
		Env:     env,
		TTY:     tty,
		Signals: signals,
		Stdin:   stdinR,
		Stdout:  fc.Writer(become.FrameStdout),
		Stderr:  fc.Writer(become.FrameStderr),
	}

	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		_ = relayClient(fc, stdinW, resize, signals, tty != nil)
		stdinW.CloseWithError(io.EOF)
		// The client went away (or bastion closed the connection after
		// the session: then this changes nothing).
		cancel(errBecomeClientGone)
	}()

	const kind = "become"
	backend := c.st.BackendName
	log = log.With("kind", kind, "account", acct.Name)
	log.Info("session start", "command", clip.String(r.Command, clip.Command), "pty", tty != nil)
	ops.SessionsActive.WithLabelValues(backend, kind).Inc()
	c.srv.audit.Emit(audit.Event{Type: audit.SessionStart, Conn: c.id, User: c.login.User, Account: acct.Name,
		Kind: kind, Command: audit.Str(r.Command), Via: "shell"})

	st, err := c.srv.backend.Run(ctx, req)

	ex := become.Exit{Code: st.Code, Signal: string(st.Signal), CoreDumped: st.CoreDumped}
	cut := context.Cause(ctx)
	msg, byBastion := causeMessage(cut)
	switch {
	case errors.Is(cut, errBecomeClientGone):
		log.Info("session cut", "reason", cut.Error())
		byBastion, msg = true, cut.Error()
	case byBastion:
		ex = become.Exit{Code: 255, Message: msg}
		log.Info("session cut", "reason", msg)
	case err != nil:
		if um, ok := session.UserMessage(err); ok {
			ex = become.Exit{Code: 1, Message: um}
		} else {
			ex = become.Exit{Code: 1, Message: fmt.Sprintf("internal error (ref %s); please report it to the operators", c.id)}
		}
		log.Error("session failed", "err", err)
		st = session.ExitStatus{Code: 1}
	}
	_ = fc.WriteFrame(become.FrameExit, ex.Marshal())
	// Closing the connection ends the client's frames (and a Read of
	// stdin the backend may still have pending).
	nc.Close()
	stdinR.CloseWithError(io.EOF)
	readers.Wait()

	d := time.Since(start)
	ops.SessionsActive.WithLabelValues(backend, kind).Dec()
	ops.SessionDuration.WithLabelValues(backend, kind).Observe(d.Seconds())
	log.Info("session end", "exit_status", st.Code, "signal", string(st.Signal), "duration", d.Round(time.Millisecond))
	ev := audit.Event{Type: audit.SessionEnd, Conn: c.id, User: c.login.User, Account: acct.Name, Kind: kind,
		Command: audit.Str(r.Command), Signal: string(st.Signal), DurationMS: d.Milliseconds(), Via: "shell"}
	if byBastion {
		ev.Reason = msg
	} else {
		ev.ExitStatus = audit.Int(st.Code)
	}
	c.srv.audit.Emit(ev)
}

// relayClient reads the client's frames until the connection ends or
// breaks the protocol: stdin into w (closed at the client's EOF), window
// sizes, signals. A Write into w lasts until the process reads it (or
// the session ends), as flow control.
func relayClient(fc *become.Conn, w *io.PipeWriter, resize chan session.WindowSize, signals chan<- session.Signal, tty bool) error {
	for {
		t, p, err := fc.ReadFrame()
		if err != nil {
			return err
		}
		switch t {
		case become.FrameStdin:
			if _, err := w.Write(p); err != nil {
				// The process no longer reads; drop the rest.
				continue
			}
		case become.FrameEOF:
			w.Close()
		case become.FrameResize:
			cols, rows, err := become.ParseResize(p)
			if err != nil {
				return err
			}
			if tty {
				sendLatest(resize, session.WindowSize{Cols: cols, Rows: rows})
			}
		case become.FrameSignal:
			if name := session.Signal(p); wireSignal(name) == string(name) {
				select {
				case signals <- name:
				default:
				}
			}
		default:
			return fmt.Errorf("%w: type %d from the client", become.ErrFrame, t)
		}
	}
}

// sendLatest puts ws in ch (capacity 1), replacing a stale size.
func sendLatest(ch chan session.WindowSize, ws session.WindowSize) {
	for {
		select {
		case ch <- ws:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/internal/become"
	"github.com/bastion-ssh/bastion/internal/clip"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/recording"
	"github.com/bastion-ssh/bastion/session"
)

// sessionChan is one "session" channel: a shell, a command or a subsystem.
type sessionChan struct {
	c   *conn
	ch  ssh.Channel
	log *slog.Logger

	ctx     context.Context // cancelled with the connection, or when the channel closes
	cancel  context.CancelCauseFunc
	release func()       // gives back the channel's place in the connection's counts
	pending atomic.Int32 // the requests and the process, while they last (done)

	// Set by the connection's loop (request) before the process starts.
	started   bool
	tty       *session.TTY
	env       map[string]string
	envBytes  int  // names plus values in env
	envCapped bool // a refusal past the limits was logged
	resize    chan session.WindowSize
	signals   chan session.Signal

	// proc is the process of a session.Starter backend once it runs;
	// until then (and with other backends) signals and window changes
	// go through the channels above.
	procMu sync.Mutex
	proc   session.Process

	isPTY   bool
	writeMu sync.Mutex // serializes tell with itself and with finish's EOF

	bytesIn, bytesOut atomic.Int64
	rec               atomic.Pointer[recording.Recorder]
}

// openSession accepts a session channel, or refuses it past
// limits.max_sessions_per_user. It runs on the connection's loop, which
// then serves the channel's requests (s.request) and says when they end
// (s.requestsEnded); release gives back the channel's place in the
// connection's counts.
func (c *conn) openSession(nch ssh.NewChannel, release func()) {
	lim := c.st.Limits
	if !c.srv.acquireUserSession(c.login.User, lim.MaxSessionsPerUser) {
		release()
		c.log.Warn("session refused", "reason", "max_sessions_per_user", "limit", lim.MaxSessionsPerUser)
		ops.SessionsRefused.WithLabelValues("max_sessions_per_user").Inc()
		_ = nch.Reject(ssh.ResourceShortage, fmt.Sprintf("%s has too many open sessions (limit %d); close some and try again", c.login.User, lim.MaxSessionsPerUser))
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		c.srv.releaseUserSession(c.login.User)
		release()
		c.log.Debug("accept session", "err", err)
		return
	}
	s := &sessionChan{
		c:       c,
		ch:      ch,
		log:     c.log,
		env:     make(map[string]string),
		release: release,
	}
	s.ctx, s.cancel = context.WithCancelCause(c.ctx)
	s.pending.Store(1) // the requests; the process adds itself
	c.mu.Lock()
	c.sessions[s] = struct{}{}
	c.mu.Unlock()
	c.streams = append(c.streams, &reqStream{reqs: reqs, handle: s.request, end: s.requestsEnded})
}

// requestsEnded runs on the connection's loop when the channel's
// requests end (the channel closed): the process, if any, is cut.
func (s *sessionChan) requestsEnded() {
	s.cancel(errors.New("session channel closed"))
	s.done()
}

// done ends one of the session's two parts, its requests and its
// process; after the last one the session is forgotten.
func (s *sessionChan) done() {
	if s.pending.Add(-1) > 0 {
		return
	}
	s.cancel(errors.New("session closed"))
	c := s.c
	c.mu.Lock()
	delete(c.sessions, s)
	if c.sessionsDone != nil && len(c.sessions) == 0 {
		close(c.sessionsDone)
		c.sessionsDone = nil
	}
	c.mu.Unlock()
	c.srv.releaseUserSession(c.login.User)
	s.release()
}

// request answers one of the session's requests. It runs on the
// connection's loop and must not block: the process runs on a goroutine
// of its own, owned by the connection (c.wg, through s.release). It
// reports whether this request started the process, or returns slow, the
// answer to run off the loop (reqStream).
func (s *sessionChan) request(req *ssh.Request) (started bool, slow func()) {
	c := s.c
	c.touch()
	ok := false
	switch req.Type {
	case "pty-req":
		if s.started || s.tty != nil {
			break
		}
		if c.restrict.NoPTY {
			s.log.Info("pty refused", "reason", "no-pty")
			break
		}
		p, err := parsePtyRequest(req.Payload)
		if err != nil {
			s.log.Info("bad pty-req", "err", err)
			break
		}
		s.tty = &p
		s.isPTY = true
		ok = true
	case "env":
		name, value, err := parseEnvRequest(req.Payload)
		if err == nil && !s.started {
			ok = s.setEnv(name, value)
		}
	case "window-change":
		if s.tty == nil {
			break
		}
		ws, err := parseWindowChange(req.Payload)
		if err != nil {
			break
		}
		if !s.started {
			s.tty.Size = ws
		} else {
			s.sendResize(ws)
		}
		ok = true
	case "signal":
		name, err := parseSignal(req.Payload)
		if err == nil && s.started {
			ok = s.sendSignal(session.Signal(name))
		}
	case "shell", "exec", "subsystem":
		if s.started {
			break
		}
		kind, command, err := s.command(req.Type, req.Payload)
		if err != nil {
			s.log.Info("session request refused", "type", req.Type, "err", err)
			break
		}
		// A forced command (command= of the key, force-command of
		// the certificate) replaces whatever was asked: a shell, a
		// command, scp, rsync, become or sftp. What was asked goes
		// into SSH_ORIGINAL_COMMAND, as OpenSSH does.
		var original *string
		if r := c.restrict; r.HasForceCommand {
			if req.Type != "shell" {
				asked := command
				original = &asked
			}
			kind, command = "exec", r.ForceCommand
		}
		s.started = true
		s.resize = make(chan session.WindowSize, 1)
		s.signals = make(chan session.Signal, 4)
		// Reply before the process starts: a process that ends at
		// once closes the channel, and the reply must come first.
		if req.WantReply {
			_ = req.Reply(true, nil)
		}
		s.pending.Add(1)
		go func() {
			wait, started := s.run(s.ctx, kind, command, original)
			switch {
			case wait == nil:
				s.done()
			case started:
				// A session.Starter backend: nothing waits for the
				// process; the backend reports its end (see run).
			default:
				// The wait for the process gets a fresh goroutine
				// (see run); this one ends here.
				go func() {
					defer s.done()
					wait()
				}()
			}
		}()
		return true, nil
	case "x11-req":
		s.log.Info("x11 forwarding refused")
	case "auth-agent-req@openssh.com":
		if !s.started {
			// The backend may take a while to listen: off the loop,
			// with the session's later requests held until it is
			// answered (a shell after it must get SSH_AUTH_SOCK).
			return false, func() {
				ok := c.agentForward(s.tell)
				if req.WantReply {
					_ = req.Reply(ok, nil)
				}
			}
		}
	}
	if req.WantReply {
		_ = req.Reply(ok, nil)
	}
	return false, nil
}

func (s *sessionChan) sendResize(ws session.WindowSize) {
	if rec := s.rec.Load(); rec != nil {
		rec.Resize(int(ws.Cols), int(ws.Rows))
	}
	s.procMu.Lock()
	defer s.procMu.Unlock()
	if s.proc != nil {
		s.proc.Resize(ws)
		return
	}
	for {
		select {
		case s.resize <- ws:
			return
		default:
		}
		select { // drop the stale size
		case <-s.resize:
		default:
		}
	}
}

// sendSignal passes a signal on; false when too many wait already.
func (s *sessionChan) sendSignal(sig session.Signal) bool {
	s.procMu.Lock()
	defer s.procMu.Unlock()
	if s.proc != nil {
		s.proc.Signal(sig)
		return true
	}
	select {
	case s.signals <- sig:
		return true
	default:
		return false
	}
}

// command turns a shell/exec/subsystem request into a session kind and a
// command line ("" for a login shell).
func (s *sessionChan) command(typ string, payload []byte) (kind, command string, err error) {
	switch typ {
	case "shell":
		return "shell", "", nil
	case "exec":
		cmd, err := parseString(payload)
		if err != nil {
			return "", "", err
		}
		return commandKind(cmd), cmd, nil
	default:
		name, err := parseString(payload)
		if err != nil {
			return "", "", err
		}
		if name != "sftp" {
			return "", "", fmt.Errorf("unknown subsystem %q", clip.String(name, clip.Name))
		}
		if s.c.st.SSH.SFTPServer == "" {
			// Never run an empty command: that is a login shell.
			return "", "", errors.New("no sftp server configured (ssh.sftp_server)")
		}
		return "sftp", s.c.st.SSH.SFTPServer, nil
	}
}

func commandKind(cmd string) string {
	switch {
	case strings.HasPrefix(cmd, "scp "):
		return "scp"
	case strings.HasPrefix(cmd, "rsync --server"):
		return "rsync"
	case cmd == "become" || strings.HasPrefix(cmd, "become "):
		return "become"
	default:
		return "exec"
	}
}

// acceptEnv is OpenSSH's default AcceptEnv on Debian: LANG and LC_*.
func acceptEnv(name string) bool {
	return name == "LANG" || strings.HasPrefix(name, "LC_")
}

// setEnv records an env request, unless its name is not accepted or not
// valid in an environment (empty, '=' or NUL; NUL in the value), or it
// would take the session past limits.max_env_vars or max_env_bytes.
// Refusals are silent to the client, as in OpenSSH (a failure reply).
func (s *sessionChan) setEnv(name, value string) bool {
	if !acceptEnv(name) || strings.ContainsAny(name, "=\x00") || strings.ContainsRune(value, 0) {
		return false
	}
	lim := s.c.st.Limits
	size := s.envBytes + len(name) + len(value)
	old, replacing := s.env[name]
	if replacing {
		size -= len(name) + len(old)
	}
	if (!replacing && len(s.env) >= lim.MaxEnvVars) || size > lim.MaxEnvBytes {
		if !s.envCapped {
			s.envCapped = true
			s.log.Info("env requests refused past the session's limit", "max_env_vars", lim.MaxEnvVars, "max_env_bytes", lim.MaxEnvBytes)
		}
		return false
	}
	s.env[name] = value
	s.envBytes = size
	return true
}

// tell writes a one-line message from bastion to the session's user.
func (s *sessionChan) tell(msg string) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	nl := "\n"
	if s.isPTY {
		nl = "\r\n"
	}
	_, _ = io.WriteString(s.ch.Stderr(), nl+"bastion: "+msg+nl)
}

// resolveAccount decides which account the process runs as: the login's
// (the user, or the tool of a user+tool login, decided at
// authentication), or the tool of `become TOOL [CMD]` (auth.ActAs).
// tool is the tool's name when the account is a tool's.
func (s *sessionChan) resolveAccount(ctx context.Context, kind, command string) (acct auth.Account, cmd, tool string, err error) {
	c := s.c
	if kind != "become" {
		return c.account, command, c.login.Tool, nil
	}
	f := strings.Fields(command)
	if len(f) < 2 {
		f = append(f, "")
	}
	tool = f[1]
	rest := strings.TrimSpace(strings.TrimPrefix(command, "become"))
	cmd = strings.TrimSpace(strings.TrimPrefix(rest, tool))
	ta, err := c.becomeAccount(ctx, s.log, tool, cmd, "")
	if err != nil {
		return acct, "", "", err
	}
	return ta, cmd, tool, nil
}

// becomeAccount decides whether the connection's person may act as tool
// (auth.ActAs) for `become TOOL [CMD]`, at the SSH level (via "") or typed
// in the person's shell (via "shell"), and audits the decision (become or
// become.deny; a usage error is not audited). The error is the one line
// the person reads.
func (c *conn) becomeAccount(ctx context.Context, log *slog.Logger, tool, cmd, via string) (auth.Account, error) {
	u := c.user
	deny := func(reason string, err error) (auth.Account, error) {
		c.srv.audit.Emit(audit.Event{Type: audit.BecomeDeny, Conn: c.id, User: u.Name, Tool: clip.String(tool, clip.Name),
			Command: audit.Str(cmd), Via: via, Reason: reason})
		return auth.Account{}, err
	}
	if tool == "" {
		return auth.Account{}, errors.New(become.Usage)
	}
	if c.login.Tool != "" {
		return deny("already a tool", fmt.Errorf("you are already logged in as tool %s", c.login.Tool))
	}
	if err := auth.ValidName(tool); err != nil {
		return deny("invalid tool name", fmt.Errorf("%q is not a valid tool name", clip.String(tool, clip.Name)))
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	ta, err := auth.ActAs(lctx, c.srv.dir, u, tool)
	switch {
	case errors.Is(err, auth.ErrNotFound):
		return deny("no such tool", fmt.Errorf("%s: no such tool; check the name", tool))
	case errors.Is(err, auth.ErrNotMaintainer):
		return deny("not a maintainer", fmt.Errorf("%s is not a maintainer of tool %s", u.Name, tool))
	case err != nil:
		log.Warn("tool lookup failed", "tool", tool, "err", err)
		return deny("directory error", errors.New(auth.UserMessage(err)))
	}
	log.Info("become", "tool", tool)
	c.srv.audit.Emit(audit.Event{Type: audit.Become, Conn: c.id, User: u.Name, Account: ta.Name, Command: audit.Str(cmd), Via: via})
	return ta, nil
}

// run prepares the session (account, environment, recording, log and
// audit) and returns wait, which runs the process and reports how it
// ended; nil when the session ended already. The caller runs wait on a
// fresh goroutine: the preparation (a directory lookup, slog, the audit
// encoder) grows this goroutine's stack to 8 KiB, Go shrinks a stack only
// at a GC, and the wait for an idle shell lasts as long as the session.
// On a fresh goroutine the wait parks with a 4 KiB stack (measured with
// 327 idle shells).
//
// With a session.Starter backend (the local one), run starts the process
// itself and returns started: no goroutine waits for it, the backend
// reports its end, and s.done runs then. That saves an idle shell the
// 4 KiB stack above.
func (s *sessionChan) run(ctx context.Context, kind, command string, original *string) (wait func(), started bool) {
	c := s.c
	start := time.Now()
	acct, command, tool, err := s.resolveAccount(ctx, kind, command)
	if err != nil {
		s.tell(err.Error())
		s.finish(session.ExitStatus{Code: 1}, true)
		return nil, false
	}
	env := make(map[string]string, len(s.env)+4)
	for k, v := range s.env {
		env[k] = v
	}
	c.connEnv(env)
	if tool != "" {
		env[become.ToolVar] = tool
	}
	if original != nil {
		env["SSH_ORIGINAL_COMMAND"] = *original
	}
	if n := c.takeNotice(); n != "" {
		s.tell(n)
	}
	// The agent socket belongs to the connection's account: a session
	// run as another account (become) does not get it.
	if sock := c.agentSock.Load(); sock != nil && acct.Name == c.account.Name {
		env["SSH_AUTH_SOCK"] = *sock
	}
	var stdout io.Writer = &countingWriter{w: s.ch, s: s}
	var recPath string
	var rec *recording.Recorder
	if s.tty != nil {
		s.tty.Resize = s.resize
		if rec = s.startRecording(acct, command, start); rec != nil {
			recPath = rec.Path()
			stdout = &teeWriter{w: stdout, rec: rec}
		}
	}

	req := session.Request{
		User:    c.user,
		Account: acct,
		Command: command,
		Env:     env,
		TTY:     s.tty,
		Signals: s.signals,
		// The backend may still be blocked reading the channel when
		// Run returns; finish closes the channel, which ends that Read.
		Stdin:  &countingReader{r: s.ch, s: s},
		Stdout: stdout,
		Stderr: &countingWriter{w: s.ch.Stderr(), s: s},
	}
	var bs *becomeServer
	if s.wantsBecome(kind, original) {
		bs = s.startBecome(ctx, req)
	}
	log := s.log.With("kind", kind, "account", acct.Name)
	logArgs := []any{"command", clip.String(command, clip.Command), "pty", s.tty != nil}
	if original != nil {
		logArgs = append(logArgs, "forced", true, "original_command", clip.String(*original, clip.Command))
	}
	log.Info("session start", logArgs...)
	backend := c.st.BackendName
	ops.SessionsActive.WithLabelValues(backend, kind).Inc()
	c.srv.audit.Emit(audit.Event{Type: audit.SessionStart, Conn: c.id, User: c.login.User, Account: acct.Name,
		Kind: kind, Command: audit.Str(command), OriginalCommand: original, Recording: recPath})
	if starter, ok := c.srv.backend.(session.Starter); ok {
		s.start(ctx, starter, req, func(st session.ExitStatus, err error) {
			if bs != nil {
				bs.stop(errors.New("the shell that started it ended"))
			}
			s.ended(ctx, req, log, start, kind, original, st, err)
			if rec != nil {
				rec.Close()
			}
			s.done()
		})
		return func() {}, true
	}
	return func() {
		if rec != nil {
			defer rec.Close()
		}
		s.wait(ctx, req, log, start, kind, original, bs)
	}, false
}

// start starts the process with a session.Starter backend; done runs
// when it has ended (or could not start). Signals and window changes
// that came while it started are passed on, the later ones go to the
// process directly (sendSignal, sendResize).
func (s *sessionChan) start(ctx context.Context, starter session.Starter, req session.Request, done func(session.ExitStatus, error)) {
	p, err := starter.Start(ctx, req, done)
	if err != nil {
		done(session.ExitStatus{}, err)
		return
	}
	s.procMu.Lock()
	defer s.procMu.Unlock()
	s.proc = p
	for {
		select {
		case ws := <-s.resize:
			p.Resize(ws)
		case sig := <-s.signals:
			p.Signal(sig)
		default:
			return
		}
	}
}

// connEnv sets SSH_CONNECTION and SSH_CLIENT in env.
func (c *conn) connEnv(env map[string]string) {
	local, _ := c.nc.LocalAddr().(*net.TCPAddr)
	remote, _ := c.nc.RemoteAddr().(*net.TCPAddr)
	if local != nil && remote != nil {
		env["SSH_CONNECTION"] = fmt.Sprintf("%s %d %s %d", remote.IP, remote.Port, local.IP, local.Port)
		env["SSH_CLIENT"] = fmt.Sprintf("%s %d %d", remote.IP, remote.Port, local.Port)
	}
}

// wait runs the process of a prepared session and reports how it ended.
// The shell's become socket (bs, may be nil) and the tool sessions
// started from it end with it.
func (s *sessionChan) wait(ctx context.Context, req session.Request, log *slog.Logger, start time.Time, kind string, original *string, bs *becomeServer) {
	st, err := s.c.srv.backend.Run(ctx, req)
	if bs != nil {
		bs.stop(errors.New("the shell that started it ended"))
	}
	s.ended(ctx, req, log, start, kind, original, st, err)
}

// ended logs, audits and reports how the process ended. It is apart from
// wait so that wait's frame, under the backend's, stays small.
func (s *sessionChan) ended(ctx context.Context, req session.Request, log *slog.Logger, start time.Time, kind string, original *string, st session.ExitStatus, err error) {
	c := s.c
	acct, command, backend := req.Account, req.Command, c.st.BackendName
	cut := context.Cause(ctx)
	msg, byBastion := causeMessage(cut)
	switch {
	case byBastion:
		s.tell(msg)
		log.Info("session cut", "reason", msg)
	case err != nil:
		if um, ok := session.UserMessage(err); ok {
			s.tell(um)
		} else {
			s.tell(fmt.Sprintf("internal error (ref %s); please report it to the operators", c.id))
		}
		log.Error("session failed", "err", err)
		st = session.ExitStatus{Code: 1}
	}
	d := time.Since(start)
	ops.SessionsActive.WithLabelValues(backend, kind).Dec()
	ops.SessionDuration.WithLabelValues(backend, kind).Observe(d.Seconds())
	in, out := s.bytesIn.Load(), s.bytesOut.Load()
	log.Info("session end", "exit_status", st.Code, "signal", string(st.Signal),
		"duration", d.Round(time.Millisecond), "bytes_in", in, "bytes_out", out)
	ev := audit.Event{Type: audit.SessionEnd, Conn: c.id, User: c.login.User, Account: acct.Name, Kind: kind,
		Command: audit.Str(command), OriginalCommand: original, Signal: string(st.Signal), BytesIn: in, BytesOut: out, DurationMS: d.Milliseconds()}
	if byBastion {
		ev.Reason = msg
	} else {
		ev.ExitStatus = audit.Int(st.Code)
	}
	c.srv.audit.Emit(ev)
	s.finish(st, !byBastion)
}

// startRecording starts an asciicast recording when the config asks for
// one. A recording that cannot start is logged and counted; the session
// goes on without it.
func (s *sessionChan) startRecording(acct auth.Account, command string, start time.Time) *recording.Recorder {
	rc := s.c.st.Recording
	if rc.Dir == "" {
		return nil
	}
	c := s.c
	rec, err := recording.Start(rc.Dir, rc.MaxBytes, recording.Header{
		User: c.login.User, Conn: c.id, Seq: int(c.recSeq.Add(1)),
		Width: int(s.tty.Size.Cols), Height: int(s.tty.Size.Rows), Term: s.tty.Term, Shell: acct.Shell,
		Command: command, Start: start,
	}, func(n int64) { ops.RecordingDropped.WithLabelValues().Add(float64(n)) },
		func(err error) {
			ops.RecordingErrors.WithLabelValues().Inc()
			s.log.Error("session recording failed; the session goes on unrecorded", "err", err)
		})
	if err != nil {
		ops.RecordingErrors.WithLabelValues().Inc()
		s.log.Error("cannot record session; it goes on unrecorded", "err", err)
		return nil
	}
	s.rec.Store(rec)
	return rec
}

// finish sends EOF, the exit status (unless the session was cut) and
// closes the channel.
func (s *sessionChan) finish(st session.ExitStatus, report bool) {
	// Under writeMu: x/crypto's CloseWrite sets the flag that a Write
	// reads without a lock (a data race with a tell from Shutdown's
	// notice, seen with -race).
	s.writeMu.Lock()
	_ = s.ch.CloseWrite()
	s.writeMu.Unlock()
	if report {
		if st.Signal != "" {
			_, _ = s.ch.SendRequest("exit-signal", false, ssh.Marshal(exitSignalMsg{
				Signal: wireSignal(st.Signal), CoreDumped: st.CoreDumped,
			}))
		} else {
			_, _ = s.ch.SendRequest("exit-status", false, ssh.Marshal(exitStatusMsg{Status: uint32(st.Code)}))
		}
	}
	_ = s.ch.Close()
}

var (
	bytesIn  = ops.Bytes.WithLabelValues("in")
	bytesOut = ops.Bytes.WithLabelValues("out")
)

type countingReader struct {
	r io.Reader
	s *sessionChan
}

func (cr *countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	if n > 0 {
		cr.s.bytesIn.Add(int64(n))
		cr.s.c.bytesIn.Add(int64(n))
		bytesIn.Add(float64(n))
		cr.s.c.touch()
	}
	return n, err
}

type countingWriter struct {
	w io.Writer
	s *sessionChan
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.s.bytesOut.Add(int64(n))
	cw.s.c.bytesOut.Add(int64(n))
	bytesOut.Add(float64(n))
	cw.s.c.touch()
	return n, err
}

// teeWriter also hands what it writes to a recorder (which never blocks).
type teeWriter struct {
	w   io.Writer
	rec *recording.Recorder
}

func (t *teeWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	if n > 0 {
		_, _ = t.rec.Write(p[:n])
	}
	return n, err
}

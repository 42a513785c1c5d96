package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/internal/clip"
	"github.com/bastion-ssh/bastion/ops"
)

// lookupTimeout bounds one directory lookup during authentication.
const lookupTimeout = 10 * time.Second

// closeGrace is how long sessions get to print why they end before the
// transport is closed under them.
const closeGrace = 2 * time.Second

var errDenied = errors.New("permission denied")

// conn is one client connection and the root of its goroutine tree.
type conn struct {
	srv *Server
	nc  net.Conn
	src netip.Addr
	st  *settings // settings at connect time
	id  string
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelCauseFunc

	// During authentication, the callback's state (one goroutine);
	// after it, what authentication decided (authResult).
	login     auth.Login
	user      *auth.User
	userErr   error
	authTries int
	account   auth.Account      // the account every channel acts as
	grant     *auth.Grant       // the key or certificate that let the user in
	restrict  auth.Restrictions // enforced in every channel

	sc *ssh.ServerConn

	// streams are the open channels whose requests the loop serves;
	// only the loop's goroutine touches them.
	streams []*reqStream

	lastActivity atomic.Int64 // unix nanoseconds
	bytesIn      atomic.Int64
	bytesOut     atomic.Int64

	mu           sync.Mutex
	closed       bool
	sessions     map[*sessionChan]struct{}
	channels     int
	nsessions    int
	noMoreSess   bool
	wg           sync.WaitGroup // channel handlers and helpers
	sessionsDone chan struct{}  // closed when sessions reach 0 after close
	missedAlive  atomic.Int32
	recSeq       atomic.Int32

	// Forwarding (remote.go). globalQ is set by the loop when the first
	// forwarding request starts the worker that answers global
	// requests from then on.
	globalQ   chan *ssh.Request
	fwdMu     sync.Mutex
	remote    map[string]*remoteForward // ssh -R listeners by bind host:port
	agentMu   sync.Mutex                // held while the agent socket is set up
	agentSock atomic.Pointer[string]    // SSH_AUTH_SOCK, once agent forwarding is on
	notice    string                    // under mu: why a forward failed, for the next session
}

func newConn(s *Server, nc net.Conn, src netip.Addr, st *settings) *conn {
	id := fmt.Sprintf("%06x", s.seq.Add(1))
	return &conn{
		srv:      s,
		nc:       nc,
		src:      src,
		st:       st,
		id:       id,
		log:      s.log.With("conn", id, "remote", nc.RemoteAddr().String()),
		sessions: make(map[*sessionChan]struct{}),
	}
}

func (c *conn) touch() { c.lastActivity.Store(time.Now().UnixNano()) }

// serve runs the handshake and returns the connection's loop, which
// serves it until the transport closes; nil when the handshake failed or
// ended the connection (it is then closed). The caller runs the loop on
// a fresh goroutine: the handshake grows this goroutine's stack to 8 KiB
// or more, and Go shrinks a stack only at a GC, while an idle connection
// waits for hours (the loop moves again for the same reason; see
// connLoop.run).
func (c *conn) serve(parent context.Context) (loop func(done func())) {
	c.ctx, c.cancel = context.WithCancelCause(parent)
	handedOff := false
	defer func() {
		if !handedOff {
			c.nc.Close()
			c.cancel(errors.New("connection closed"))
		}
	}()

	lim := c.st.Limits
	grace := time.Now().Add(lim.LoginGraceTime)
	_ = c.nc.SetDeadline(grace)
	hc, stopQuickAck := withQuickAck(withReadAhead(c.nc))
	hc, hello := peekHello(hc, grace)
	sc, chans, reqs, err := ssh.NewServerConn(hc, c.serverConfig(hello))
	stopQuickAck()
	c.srv.authenticated(c.src) // no longer counts against max_startups
	if err != nil {
		c.srv.penalise(c.st, c.src, c.nc.RemoteAddr().String(), c.logHandshakeError(err))
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	c.sc = sc
	res, _ := sc.Permissions.ExtraData[authResultKey{}].(*authResult)
	if res == nil {
		sc.Close()
		c.log.Error("authenticated without an authentication result; closing")
		return nil
	}
	c.login, c.user, c.account, c.grant = res.login, res.user, res.account, res.grant
	c.restrict = c.grant.Restrictions
	fp := sc.Permissions.Extensions["fp"]
	// The ServerConn keeps its Permissions for the connection's life;
	// their two maps (about 800 bytes) are of no use once read.
	sc.Permissions.Extensions, sc.Permissions.ExtraData = nil, nil
	c.log = c.log.With("user", sc.User())
	algs := negotiated(sc)
	ev := audit.Event{Type: audit.AuthSuccess, Conn: c.id, Remote: c.nc.RemoteAddr().String(),
		User: c.login.User, Account: c.account.Name, Method: "publickey", Fingerprint: fp,
		Kex: algs.KeyExchange, Cipher: algs.Read.Cipher, MAC: algs.Read.MAC, HostKey: algs.HostKey,
		KeySource: c.grant.Source, Restrictions: c.restrict.Summary()}
	if c.login.Tool != "" {
		ev.Tool = c.login.Tool
	}
	logArgs := []any{"fingerprint", fp, "account", c.account.Name, "key_source", c.grant.Source, "client", clip.String(string(sc.ClientVersion()), clip.Name),
		"kex", algs.KeyExchange, "cipher", algs.Read.Cipher, "mac", algs.Read.MAC, "host_key", algs.HostKey}
	if ci := c.grant.Cert; ci != nil {
		ev.CertID, ev.CertSerial, ev.CAFingerprint = ci.KeyID, ci.Serial, ci.CAFingerprint
		logArgs = append(logArgs, "cert_id", ci.KeyID, "cert_serial", ci.Serial, "ca", ci.CAFingerprint)
	}
	if r := ev.Restrictions; len(r) > 0 {
		logArgs = append(logArgs, "restrictions", strings.Join(r, ","))
	}
	c.log.Info("login", logArgs...)
	ops.AuthAttempts.WithLabelValues("publickey", "success").Inc()
	c.srv.audit.Emit(ev)
	c.touch()
	handedOff = true
	return func(done func()) { c.loop(sc, chans, reqs, done) }
}

// loop serves an authenticated connection: new channels, global
// requests and the sessions' requests, until the transport closes; then
// it runs done.
func (c *conn) loop(sc *ssh.ServerConn, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request, done func()) {
	stopTimers := c.startTimers()
	closerDone := make(chan struct{})
	stopCloser := context.AfterFunc(c.ctx, func() {
		defer close(closerDone)
		c.closeAfterSessions()
	})
	l := &connLoop{c: c, chans: chans, reqs: reqs, resumed: make(chan *reqStream), end: func() {
		c.cancel(errors.New("connection closed"))
		stopTimers()
		if !stopCloser() {
			<-closerDone
		}
		c.wg.Wait()
		c.log.Info("disconnect", "bytes_in", c.bytesIn.Load(), "bytes_out", c.bytesOut.Load())
		sc.Close()
		c.nc.Close()
		done()
	}}
	l.run()
}

// connLoop is the state of a connection's loop, which may move to a
// fresh goroutine (run).
type connLoop struct {
	c       *conn
	chans   <-chan ssh.NewChannel
	reqs    <-chan *ssh.Request
	resumed chan *reqStream // a held stream's slow answer is done
	cases   []reflect.SelectCase
	serving []*reqStream // the stream of each case past the first three
	end     func()       // after the last event
}

// run serves events until the connection ends, then runs l.end.
//
// One goroutine serves new channels, global requests and the requests
// of every session channel (x/crypto hands each channel's requests over
// on a Go channel of its own): a goroutine per session only to wait for
// its requests would park a 4 KiB stack for as long as the session
// lasts. The select set is bounded by limits.max_sessions_per_conn.
//
// Once a session's process has started, the loop continues on a fresh
// goroutine and this one ends: accepting a channel and answering
// requests (encryption, the request parsers) grow the goroutine's stack
// to 8 KiB, Go shrinks a stack only at a GC, and GCs are rare once the
// sessions are idle; the fresh goroutine parks with a small stack.
func (l *connLoop) run() {
	c := l.c
	for l.chans != nil || l.reqs != nil || len(c.streams) > 0 {
		l.cases = append(l.cases[:0],
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(l.chans)},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(l.reqs)},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(l.resumed)})
		l.serving = l.serving[:0]
		for _, st := range c.streams {
			if !st.held {
				l.cases = append(l.cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(st.reqs)})
				l.serving = append(l.serving, st)
			}
		}
		i, v, ok := reflect.Select(l.cases)
		var st *reqStream
		if i >= 3 {
			st = l.serving[i-3]
		}
		clear(l.cases) // keep no channel alive past its close
		clear(l.serving)
		switch {
		case i == 0 && !ok:
			l.chans = nil
		case i == 0:
			c.dispatch(v.Interface().(ssh.NewChannel))
		case i == 1 && !ok:
			l.reqs = nil
		case i == 1:
			c.globalRequest(v.Interface().(*ssh.Request))
		case i == 2:
			v.Interface().(*reqStream).held = false
		case !ok:
			c.streams = slices.DeleteFunc(c.streams, func(x *reqStream) bool { return x == st })
			st.end()
		default:
			req := v.Interface().(*ssh.Request)
			started, slow := st.handle(req)
			if slow != nil {
				l.hold(st, req, slow)
			}
			if started {
				go l.run()
				return
			}
		}
	}
	l.end()
}

// hold runs slow, a request's answer that may block, on a goroutine
// owned by the connection; the stream's later requests wait until it is
// done.
func (l *connLoop) hold(st *reqStream, req *ssh.Request, slow func()) {
	st.held = true
	if !l.c.goTracked(func() {
		slow()
		l.resumed <- st // the loop selects on resumed while st is held
	}) {
		st.held = false
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
	}
}

// reqStream is one channel's requests, served by the connection's loop.
type reqStream struct {
	reqs <-chan *ssh.Request
	// handle answers one request and must not block: it returns slow
	// for an answer that may (run off the loop, the stream's later
	// requests held until it is done), and started once the channel's
	// process started.
	handle func(*ssh.Request) (started bool, slow func())
	end    func() // the requests ended: the channel closed
	held   bool   // a slow answer is running
}

// logHandshakeError logs why a connection ended before logging in and
// returns the penalty reason for its source.
func (c *conn) logHandshakeError(err error) (penalty string) {
	var ne net.Error
	var authErr *ssh.ServerAuthError
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		if c.srv.logs.allow("grace", c.src) {
			c.log.Info("login grace time exceeded", "limit", c.st.Limits.LoginGraceTime)
		}
		return penaltyGraceExceeded
	case c.authTries > 0 || errors.As(err, &authErr) && len(authErr.Errors) > 0:
		c.log.Debug("connection ended without logging in", "user", clip.String(c.login.User, clip.Name), "err", c.userErr)
		return penaltyAuthFailure
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed):
		c.log.Debug("closed before authenticating", "err", err)
		return penaltyNoAuth
	default:
		c.log.Debug("handshake failed", "err", err)
		return penaltyProtocolError
	}
}

// closeAfterSessions runs when the connection's context is cancelled:
// sessions (cancelled with it) get a moment to tell their users why,
// then the transport is closed.
func (c *conn) closeAfterSessions() {
	var cut *cutCause
	if errors.As(context.Cause(c.ctx), &cut) {
		ops.SessionsCut.WithLabelValues(cut.reason).Inc()
	}
	c.mu.Lock()
	c.closed = true
	if len(c.sessions) > 0 {
		c.sessionsDone = make(chan struct{})
	}
	done := c.sessionsDone
	c.mu.Unlock()
	if done != nil {
		t := time.NewTimer(closeGrace)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
	}
	if c.sc != nil {
		c.sc.Close()
	}
}

// notify writes msg to every open session of the connection, each in a
// goroutine owned by the connection, and returns at once: a session
// whose client does not read has a full window, and the write then waits
// until the connection closes.
func (c *conn) notify(msg string) {
	c.mu.Lock()
	ss := make([]*sessionChan, 0, len(c.sessions))
	for s := range c.sessions {
		ss = append(ss, s)
	}
	c.mu.Unlock()
	for _, s := range ss {
		c.goTracked(func() { s.tell(msg) })
	}
}

// serverConfig is this connection's x/crypto config; hello, when the
// client's KEXINIT was read, steers the cipher (algorithms.go).
func (c *conn) serverConfig(hello *clientHello) *ssh.ServerConfig {
	st := c.st
	algs := configured(st.SSH).steer(hello)
	cfg := &ssh.ServerConfig{
		Config: ssh.Config{
			KeyExchanges: algs.kex,
			Ciphers:      algs.ciphers,
			MACs:         algs.macs,
		},
		// x/crypto does not count the first MaxAuthTries failed key
		// queries; publicKey counts every key offered, as OpenSSH does,
		// and refuses every key past max_auth_tries. With half the limit
		// here, x/crypto sends OpenSSH's disconnect ("too many
		// authentication failures", reason 2) when a client that asks
		// before signing (OpenSSH, x/crypto) has had max_auth_tries keys
		// refused; a client that signs without asking (paramiko) is cut
		// after half as many.
		MaxAuthTries:      (st.Limits.MaxAuthTries + 1) / 2,
		ServerVersion:     serverVersion,
		PublicKeyCallback: c.publicKey,
	}
	if st.SSH.Banner != "" {
		banner := st.SSH.Banner
		cfg.BannerCallback = func(ssh.ConnMetadata) string { return banner }
	}
	for _, k := range st.HostKeys.signers {
		cfg.AddHostKey(k)
	}
	return cfg
}

// publicKey is the only authentication method. An unknown user and a
// wrong key take the same path and get the same answer.
func (c *conn) publicKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	fp := ssh.FingerprintSHA256(key)
	// x/crypto counts only signed attempts against MaxAuthTries; like
	// OpenSSH we count every key offered, so keys cannot be probed
	// without limit on one connection.
	c.authTries++
	if c.authTries > c.st.Limits.MaxAuthTries {
		c.userErr = fmt.Errorf("too many authentication attempts (limit %d)", c.st.Limits.MaxAuthTries)
		c.authFailed(meta.User(), fp, "too_many", "too many authentication attempts")
		return nil, errDenied
	}
	login, err := auth.ParseLogin(meta.User())
	if err != nil {
		c.userErr = fmt.Errorf("invalid user name %q: %w", clip.String(meta.User(), clip.Name), err)
		c.authFailed(meta.User(), fp, "invalid_name", "invalid user name")
		return nil, errDenied
	}
	if c.user == nil || c.user.Name != login.User {
		ctx, cancel := context.WithTimeout(c.ctx, lookupTimeout)
		u, err := c.srv.dir.LookupUser(ctx, login.User)
		cancel()
		if err != nil {
			c.userErr = fmt.Errorf("lookup %s: %w", login.User, err)
			if berr := bannerFor(err); berr != nil {
				c.authFailed(login.User, fp, resultFor(err), err.Error())
				return nil, berr
			}
			c.authFailed(login.User, fp, "denied", err.Error())
			return nil, errDenied
		}
		c.user = u
	}
	c.login = login
	u := c.user
	grant, err := c.st.Trust.Authenticate(u, login, key, c.src, time.Now())
	if err != nil {
		c.userErr = fmt.Errorf("%s: %w", login.User, err)
		reason := strings.TrimPrefix(err.Error(), auth.ErrKeyRefused.Error()+": ")
		c.authFailed(login.User, fp, "denied", reason)
		return nil, errDenied
	}
	// A tool login is decided here, not when a channel opens: a person
	// who may not act as the tool gets the same refusal as a wrong key
	// (the reason goes to the audit log only).
	ctx, cancel := context.WithTimeout(c.ctx, lookupTimeout)
	acct, err := auth.ActAs(ctx, c.srv.dir, u, login.Tool)
	cancel()
	if err != nil {
		c.userErr = fmt.Errorf("%s: %w", meta.User(), err)
		if berr := bannerFor(err); berr != nil {
			c.authFailed(login.User, fp, resultFor(err), err.Error())
			return nil, berr
		}
		c.authFailed(login.User, fp, "denied", err.Error())
		return nil, errDenied
	}
	// The result travels with the key in the Permissions: x/crypto
	// caches a query's answer and uses it for the signed attempt, which
	// may come after other users or keys were tried on this connection.
	return &ssh.Permissions{
		Extensions: map[string]string{"fp": fp},
		ExtraData:  map[any]any{authResultKey{}: &authResult{login: login, user: u, account: acct, grant: grant}},
	}, nil
}

// authResultKey keys the authResult in ssh.Permissions.ExtraData.
type authResultKey struct{}

// authResult is what authentication decided for a connection.
type authResult struct {
	login   auth.Login
	user    *auth.User
	account auth.Account // the user's own, or the tool of user+tool
	grant   *auth.Grant
}

// bannerFor returns the error that tells the client in one line why the
// directory cannot answer, or nil for errors that must look like a wrong
// key.
func bannerFor(err error) error {
	if errors.Is(err, auth.ErrUnavailable) || errors.Is(err, auth.ErrBlocked) {
		return &ssh.BannerError{Err: err, Message: "bastion: " + auth.UserMessage(err) + "\r\n"}
	}
	return nil
}

func resultFor(err error) string {
	if errors.Is(err, auth.ErrBlocked) {
		return "blocked"
	}
	return "unavailable"
}

// authFailed counts, logs and audits one failed attempt. result is the
// bounded metric label; reason is the detail for the logs. Past the
// first few a minute from one source, attempts are summarised instead
// (Server.reportSuppressed).
func (c *conn) authFailed(user, fp, result, reason string) {
	ops.AuthAttempts.WithLabelValues("publickey", result).Inc()
	if !c.srv.logs.allow("auth", c.src) {
		return
	}
	c.log.Info("authentication failed", "user", clip.String(user, clip.Name), "fingerprint", fp, "reason", reason)
	c.srv.audit.Emit(audit.Event{Type: audit.AuthFailure, Conn: c.id, Remote: c.nc.RemoteAddr().String(),
		User: user, Method: "publickey", Fingerprint: fp, Reason: reason})
}

// globalRequest answers a connection-level request. Remote forwarding
// (tcpip-forward, cancel-tcpip-forward) goes to the forwarding worker
// (remote.go), and with it every later request, in order; the rest is
// answered here. It blocks only while the worker's queue is full.
func (c *conn) globalRequest(req *ssh.Request) {
	c.touch()
	if c.queueGlobal(req) {
		return
	}
	c.answerGlobal(req)
}

// answerGlobal answers a global request other than remote forwarding.
func (c *conn) answerGlobal(req *ssh.Request) {
	switch req.Type {
	case "streamlocal-forward@openssh.com":
		c.log.Info("remote forwarding refused", "type", req.Type)
		_ = req.Reply(false, nil)
	case "no-more-sessions@openssh.com":
		c.mu.Lock()
		c.noMoreSess = true
		c.mu.Unlock()
	default:
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
	}
}

// timerSet holds a connection's timers. Each runs a func with
// time.AfterFunc (no goroutine while it waits) that returns when to run
// again (0: never). Once stopped, no timer re-arms.
type timerSet struct {
	mu      sync.Mutex
	stopped bool
	timers  []*time.Timer
}

func (ts *timerSet) every(first time.Duration, f func() (next time.Duration)) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.stopped {
		return
	}
	i := len(ts.timers)
	ts.timers = append(ts.timers, time.AfterFunc(first, func() {
		next := f()
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if next > 0 && !ts.stopped {
			ts.timers[i].Reset(next)
		}
	}))
}

func (ts *timerSet) stop() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.stopped = true
	for _, t := range ts.timers {
		t.Stop()
	}
}

// startTimers arms keepalive, idle and max-duration timers.
func (c *conn) startTimers() (stop func()) {
	lim := c.st.Limits
	ts := &timerSet{}
	if lim.MaxSessionDuration > 0 {
		ts.every(lim.MaxSessionDuration, func() time.Duration {
			c.cancel(userCause("max_session_duration", fmt.Sprintf("maximum session duration of %s reached; log in again to continue", lim.MaxSessionDuration)))
			return 0
		})
	}
	if lim.IdleTimeout > 0 {
		ts.every(lim.IdleTimeout, func() time.Duration {
			idle := time.Since(time.Unix(0, c.lastActivity.Load()))
			if idle >= lim.IdleTimeout {
				c.cancel(userCause("idle_timeout", fmt.Sprintf("idle timeout: no input or output for %s", lim.IdleTimeout)))
				return 0
			}
			return lim.IdleTimeout - idle
		})
	}
	if lim.KeepaliveInterval > 0 {
		ts.every(lim.KeepaliveInterval, func() time.Duration {
			if int(c.missedAlive.Load()) >= lim.KeepaliveCountMax {
				c.log.Info("client stopped answering keepalives", "missed", lim.KeepaliveCountMax)
				c.cancel(userCause("keepalive", "the connection stopped answering keepalives"))
				return 0
			}
			c.missedAlive.Add(1)
			if !c.goTracked(func() {
				if _, _, err := c.sc.SendRequest("keepalive@openssh.com", true, nil); err == nil {
					c.missedAlive.Store(0)
				}
			}) {
				return 0
			}
			return lim.KeepaliveInterval
		})
	}
	return ts.stop
}

// goTracked starts f as a goroutine owned by the connection, unless the
// connection is closing.
func (c *conn) goTracked(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.ctx.Err() != nil {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// dispatch starts a handler for a new channel, or rejects it.
func (c *conn) dispatch(nch ssh.NewChannel) {
	c.touch()
	lim := c.st.Limits
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = nch.Reject(ssh.ResourceShortage, "connection is closing")
		return
	}
	if c.channels >= lim.MaxChannelsPerConn {
		c.mu.Unlock()
		c.log.Warn("channel refused", "type", nch.ChannelType(), "reason", "max_channels_per_conn")
		ops.SessionsRefused.WithLabelValues("max_channels_per_conn").Inc()
		_ = nch.Reject(ssh.ResourceShortage, fmt.Sprintf("too many open channels on this connection (limit %d)", lim.MaxChannelsPerConn))
		return
	}
	isSession := nch.ChannelType() == "session"
	if isSession {
		// Counted here, under the lock, so that a burst of opens cannot
		// overshoot the limit.
		reason := ""
		switch {
		case c.noMoreSess:
			reason = "no more sessions on this connection"
		case c.nsessions >= lim.MaxSessionsPerConn:
			reason = fmt.Sprintf("too many sessions on this connection (limit %d)", lim.MaxSessionsPerConn)
		}
		if reason != "" {
			c.mu.Unlock()
			c.log.Warn("session refused", "reason", "max_sessions_per_conn", "limit", lim.MaxSessionsPerConn)
			ops.SessionsRefused.WithLabelValues("max_sessions_per_conn").Inc()
			_ = nch.Reject(ssh.ResourceShortage, reason)
			return
		}
		c.nsessions++
	}
	c.channels++
	c.wg.Add(1)
	c.mu.Unlock()

	release := func() {
		c.mu.Lock()
		c.channels--
		if isSession {
			c.nsessions--
		}
		c.mu.Unlock()
		c.wg.Done()
	}
	switch nch.ChannelType() {
	case "session":
		c.openSession(nch, release)
	case "direct-tcpip":
		go func() {
			defer release()
			c.handleDirectTCPIP(nch)
		}()
	default:
		release()
		c.log.Info("channel refused", "type", nch.ChannelType(), "reason", "unsupported")
		_ = nch.Reject(ssh.UnknownChannelType, "bastion does not support "+nch.ChannelType()+" channels")
	}
}

package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/internal/forwardpolicy"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("sshd: server closed")

// Settings is what the server reads from the config; it can be swapped
// at run time with Reload.
type Settings struct {
	SSH        config.SSH
	Limits     config.Limits
	Forwarding config.Forwarding
	HostKeys   HostKeys
	Recording  config.Recording
	// Trust holds the user CAs and revocations (ssh.trusted_user_ca_keys,
	// ssh.revoked_keys); nil trusts no CA and revokes nothing.
	Trust *auth.Trust
	// BackendName labels sessions in logs ("local", "kube").
	BackendName string
}

type settings struct {
	Settings
	policy *forwardpolicy.Policy // who may forward where
	exempt []netip.Prefix        // Limits.Penalties.Exempt
}

// Deps are the server's collaborators.
type Deps struct {
	Directory auth.Directory
	Backend   session.Backend
	// Audit receives audit events; nil disables them.
	Audit *audit.Log
}

// Server is an SSH server. Create it with New, run it with Serve, stop it
// with Shutdown.
type Server struct {
	log     *slog.Logger
	dir     auth.Directory
	backend session.Backend
	audit   *audit.Log

	cur atomic.Pointer[settings]

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	perSource map[netip.Addr]int
	perUser   map[string]int
	unauth    int
	// unauthPerSource counts a source's connections not yet logged in.
	unauthPerSource map[netip.Addr]int
	penalties       penaltyBox
	draining        bool
	connWG          sync.WaitGroup

	// logs bounds the log lines and audit events repeated per source.
	logs *logLimiter

	seq atomic.Uint64
}

// New returns a server. It does not listen yet.
func New(st Settings, deps Deps, log *slog.Logger) (*Server, error) {
	s := &Server{
		log:       log,
		dir:       deps.Directory,
		backend:   deps.Backend,
		audit:     deps.Audit,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		perSource: make(map[netip.Addr]int),
		perUser:   make(map[string]int),

		unauthPerSource: make(map[netip.Addr]int),
	}
	s.logs = newLogLimiter(logBurst, logWindow, s.reportSuppressed)
	if err := s.Reload(st); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload swaps the settings used by new connections and new channels.
// Connections in progress keep working.
func (s *Server) Reload(st Settings) error {
	if st.HostKeys.Len() == 0 {
		return errors.New("no host keys loaded")
	}
	policy, err := forwardpolicy.New(st.Forwarding, s.backend)
	if err != nil {
		return fmt.Errorf("forwarding.allow: %w", err)
	}
	exempt, err := st.Limits.Penalties.ExemptPrefixes()
	if err != nil {
		return fmt.Errorf("limits.penalties.%w", err)
	}
	s.cur.Store(&settings{Settings: st, policy: policy, exempt: exempt})
	return nil
}

func (s *Server) settings() *settings { return s.cur.Load() }

// Serve accepts connections on ln until Shutdown. It always returns a
// non-nil error; after Shutdown, ErrServerClosed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			draining := s.draining
			s.mu.Unlock()
			if draining {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		s.admit(ctx, nc)
	}
}

// admit applies the pre-authentication caps (admission.go) and starts
// the connection's goroutine tree.
func (s *Server) admit(ctx context.Context, nc net.Conn) {
	st := s.settings()
	src := remoteAddr(nc)
	lim := st.Limits
	s.mu.Lock()
	reason, detail := "", ""
	if why, ok := s.penalties.refused(lim.Penalties, st.exempt, src, time.Now()); ok {
		reason, detail = refusePenalty, why
	}
	switch {
	case reason != "":
	case s.draining:
		reason = refuseDraining
	case s.unauth >= lim.MaxStartups.Full:
		reason = refuseStartupsFull
	case s.unauthPerSource[src] >= lim.PerSourceMaxStartups:
		reason = refusePerSourceUnauth
	case s.perSource[src] >= lim.MaxConnsPerSource:
		reason = refusePerSource
	case earlyDrop(s.unauth, lim.MaxStartups, rollPercent):
		reason = refuseStartupsRandom
	}
	if reason != "" {
		s.mu.Unlock()
		ops.ConnectionsRejected.WithLabelValues(reason).Inc()
		if s.logs.allow("refused", src) {
			s.log.Warn("connection refused", "remote", nc.RemoteAddr().String(), "reason", reason, "detail", detail)
		}
		// Like OpenSSH, say so before closing (a fresh socket's buffer
		// takes it without blocking).
		_ = nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = io.WriteString(nc, refusedBanner)
		nc.Close()
		return
	}
	s.unauth++
	s.unauthPerSource[src]++
	s.perSource[src]++
	c := newConn(s, nc, src, st)
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()

	ops.ConnectionsTotal.WithLabelValues().Inc()
	ops.ConnectionsActive.WithLabelValues().Inc()
	done := func() {
		s.mu.Lock()
		delete(s.conns, c)
		if s.perSource[src]--; s.perSource[src] <= 0 {
			delete(s.perSource, src)
		}
		s.mu.Unlock()
		ops.ConnectionsActive.WithLabelValues().Dec()
		s.connWG.Done()
	}
	go func() {
		loop := c.serve(ctx)
		if loop == nil {
			done()
			return
		}
		// A fresh goroutine with a small stack for the idle wait (see
		// serve); this one ends here.
		go loop(done)
	}()
}

// authenticated is called once per connection when its handshake ends,
// logged in or not: it no longer counts against max_startups.
func (s *Server) authenticated(src netip.Addr) {
	s.mu.Lock()
	s.unauth--
	if s.unauthPerSource[src]--; s.unauthPerSource[src] <= 0 {
		delete(s.unauthPerSource, src)
	}
	s.mu.Unlock()
}

// penalise adds a penalty of the given reason to src (nothing while
// draining: those connections ended by bastion's doing).
func (s *Server) penalise(st *settings, src netip.Addr, remote, reason string) {
	pc := st.Limits.Penalties
	d := map[string]time.Duration{
		penaltyAuthFailure: pc.AuthFailure, penaltyNoAuth: pc.NoAuth,
		penaltyGraceExceeded: pc.GraceExceeded, penaltyProtocolError: pc.ProtocolError,
	}[reason]
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return
	}
	activated, left, ok := s.penalties.add(pc, st.exempt, src, reason, d, time.Now())
	s.mu.Unlock()
	switch {
	case activated:
		s.log.Warn("source penalised: its new connections are refused", "remote", remote, "reason", reason, "for", left.Round(time.Millisecond))
	case ok:
		s.log.Debug("penalty added", "remote", remote, "reason", reason, "outstanding", left.Round(time.Millisecond))
	}
}

// reportSuppressed writes the summary of events not logged one by one.
func (s *Server) reportSuppressed(k logKey, n int, window time.Duration) {
	src := "other sources"
	if k.src.IsValid() {
		src = k.src.String()
	}
	switch k.kind {
	case "auth":
		ops.AuthFailureLogsSuppressed.WithLabelValues().Add(float64(n))
		s.log.Warn("authentication failures not logged one by one", "remote", src, "count", n, "window", window)
		s.audit.Emit(audit.Event{Type: audit.AuthFailureSummary, Remote: src, Count: n,
			Reason: fmt.Sprintf("%d more failed attempts in %s", n, window)})
	default:
		s.log.Warn("connections refused but not logged one by one", "remote", src, "count", n, "window", window)
	}
}

// acquireUserSession reserves one of user's session slots.
func (s *Server) acquireUserSession(user string, max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUser[user] >= max {
		return false
	}
	s.perUser[user]++
	return true
}

func (s *Server) releaseUserSession(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUser[user]--; s.perUser[user] <= 0 {
		delete(s.perUser, user)
	}
}

// Shutdown stops accepting, tells every session that the server is
// shutting down, waits for sessions to end until ctx is done, then cuts
// the rest. It returns once every connection's goroutines have ended.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	defer s.logs.stop()
	// Best effort: a client that does not read has a full window, and
	// the notice must not hold up the drain (conn.notify does not block).
	for _, c := range conns {
		c.notify("the server is shutting down for maintenance; save your work and reconnect in a minute")
	}
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.cancel(userCause("shutdown", "the server shut down"))
	}
	s.mu.Unlock()
	<-done
	return nil
}

// ActiveConns returns the number of open connections.
func (s *Server) ActiveConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func remoteAddr(nc net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(nc.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

package sshd

import (
	"context"
	"errors"
	"fmt"
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
	rules []config.ForwardRule
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
	draining  bool
	connWG    sync.WaitGroup

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
	}
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
	rules, err := st.Forwarding.Rules()
	if err != nil {
		return fmt.Errorf("forwarding.allow: %w", err)
	}
	s.cur.Store(&settings{Settings: st, rules: rules})
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

// admit applies the pre-authentication caps and starts the connection's
// goroutine tree.
func (s *Server) admit(ctx context.Context, nc net.Conn) {
	st := s.settings()
	src := remoteAddr(nc)
	s.mu.Lock()
	reason := ""
	switch {
	case s.draining:
		reason = "shutting_down"
	case s.unauth >= st.Limits.MaxStartups:
		reason = "max_startups"
	case s.perSource[src] >= st.Limits.MaxConnsPerSource:
		reason = "max_conns_per_source"
	}
	if reason != "" {
		s.mu.Unlock()
		ops.ConnectionsRejected.WithLabelValues(reason).Inc()
		s.log.Warn("connection refused", "remote", nc.RemoteAddr().String(), "reason", reason)
		nc.Close()
		return
	}
	s.unauth++
	s.perSource[src]++
	c := newConn(s, nc, src, st)
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()

	ops.ConnectionsTotal.WithLabelValues().Inc()
	ops.ConnectionsActive.WithLabelValues().Inc()
	go func() {
		defer s.connWG.Done()
		defer ops.ConnectionsActive.WithLabelValues().Dec()
		c.serve(ctx)
		s.mu.Lock()
		delete(s.conns, c)
		if s.perSource[src]--; s.perSource[src] <= 0 {
			delete(s.perSource, src)
		}
		s.mu.Unlock()
	}()
}

func (s *Server) authenticated() {
	s.mu.Lock()
	s.unauth--
	s.mu.Unlock()
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

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
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

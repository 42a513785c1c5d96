package ldap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/ops"
)

// serverBackoff is how long a server that failed (refused, broke, or did
// not answer within its timeout) is tried only after the others.
const serverBackoff = 30 * time.Second

// probeInterval is how often the pool itself tries a server that failed,
// until it answers: lookups may never dial it again while they reuse
// pooled connections to another server, and the log and
// bastion_ldap_server_up must still tell when it answers again.
const probeInterval = 5 * time.Second

// server is one configured URL.
type server struct {
	url    string // as configured, for logs
	scheme string // ldap or ldaps
	host   string // for TLS verification
	addr   string // host:port
	index  int    // in ldap.urls
}

func parseServer(s string) (server, error) {
	u, err := url.Parse(s)
	if err != nil {
		return server{}, fmt.Errorf("ldap url %q: %w", s, err)
	}
	port := u.Port()
	switch u.Scheme {
	case "ldap":
		if port == "" {
			port = "389"
		}
	case "ldaps":
		if port == "" {
			port = "636"
		}
	default:
		return server{}, fmt.Errorf("ldap url %q: scheme must be ldap or ldaps", s)
	}
	if u.Hostname() == "" {
		return server{}, fmt.Errorf("ldap url %q: no host", s)
	}
	return server{url: s, scheme: u.Scheme, host: u.Hostname(), addr: net.JoinHostPort(u.Hostname(), port)}, nil
}

// pool keeps at most cfg.PoolSize connections, idle ones reused (most
// recently used first), broken ones closed and replaced. New connections
// go to the first server that answers, in configuration order, servers
// that failed recently last.
//
// A server that failed is retried by one connection attempt at a time
// (a probe): while it hangs, only that attempt waits for it, and other
// lookups go to the other servers or fail at once, so that the cache can
// serve its stale answers and new users read "directory unavailable"
// well within the time a login waits. A server is said to answer again
// only once it has answered an LDAP request.
type pool struct {
	cfg     config.LDAP
	bindDN  string
	log     *slog.Logger
	servers []server
	ca      *caFile
	slots   chan struct{} // a token per connection in use
	dials   atomic.Int64  // connections opened, for tests
	backoff time.Duration // serverBackoff; shorter in tests
	every   time.Duration // probeInterval; shorter in tests

	mu     sync.Mutex
	idle   []*conn
	health []health // by server index
	closed bool
	// The probers' context, made by the first markDown from its
	// lookup's (without its cancellation), cancelled by close.
	probeCtx     context.Context
	cancelProbes context.CancelFunc
	probers      sync.WaitGroup
}

// health is what the pool remembers of a server that failed.
type health struct {
	failed  bool      // failed last time, and has not answered since
	until   time.Time // tried after the others until then
	probing bool      // a connection attempt to it is in flight
	prober  bool      // the pool's own prober of it runs
	hung    bool      // its last failure was no answer in time
	err     error     // its last failure
}

// conn is one bound connection.
type conn struct {
	lc      *ldap.Conn
	raw     net.Conn
	server  *server
	used    time.Time
	broken  bool
	timeout time.Duration
}

func newPool(cfg config.LDAP, servers []server, ca *caFile, log *slog.Logger) *pool {
	p := &pool{
		cfg: cfg, bindDN: cfg.DN(cfg.BindDN), log: log, servers: servers, ca: ca,
		slots:   make(chan struct{}, cfg.PoolSize),
		backoff: serverBackoff,
		every:   probeInterval,
		health:  make([]health, len(servers)),
	}
	for i := range servers {
		p.setState(i, health{})
	}
	return p
}

// setState publishes server i's health: bastion_ldap_server_up and
// bastion_ldap_server_hung.
func (p *pool) setState(i int, h health) {
	up, hung := 1.0, 0.0
	if h.failed {
		up = 0
		if h.hung {
			hung = 1
		}
	}
	ops.LDAPServerUp.WithLabelValues(p.servers[i].url).Set(up)
	ops.LDAPServerHung.WithLabelValues(p.servers[i].url).Set(hung)
}

// do runs fn on a connection, within cfg.Timeout per server. fn must
// return only errors of the connection's operations, made with the
// context it is given (so that do can tell a broken connection from an
// LDAP result); it may run again, on another connection, when the first
// one turns out to be broken or its server does not answer in time.
func (p *pool) do(ctx context.Context, fn func(context.Context, *conn) error) error {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wait for a free ldap connection: %w", context.Cause(ctx))
	}
	defer func() { <-p.slots }()

	var errs []error
	tried := make([]bool, len(p.servers)) // not to be dialled again by this call
	for attempt := 0; attempt <= len(p.servers); attempt++ {
		c, reused, err := p.get(ctx, tried)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		actx, cancel := context.WithTimeoutCause(ctx, p.cfg.Timeout,
			fmt.Errorf("no answer within ldap.timeout (%s)", p.cfg.Timeout))
		err = fn(actx, c)
		timedOut := ctx.Err() == nil && (actx.Err() != nil || isTimeout(err))
		if timedOut && actx.Err() != nil {
			err = fmt.Errorf("%w: %w", context.Cause(actx), err)
		}
		cancel()
		if !c.isBroken(err) {
			p.put(c)
			return err
		}
		c.close()
		errs = append(errs, fmt.Errorf("%s: %w", c.server.url, err))
		switch {
		case ctx.Err() != nil:
			// The lookup was given up: the server is not to blame.
		case timedOut || !reused:
			// A server that does not answer in time is hung, or the
			// network dropped this connection: the next attempt tries
			// the other servers first, and this one again only as a
			// probe (which tells the two apart). A new connection that
			// failed is not tried again by this lookup.
			if !reused {
				tried[c.server.index] = true
			}
			p.markDown(ctx, c.server, err, timedOut)
		default:
			p.log.Debug("ldap connection broken; replacing it", "server", c.server.url, "err", err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// isTimeout tells whether err says that the server did not answer in time.
func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// go-ldap formats some network errors into its own text.
	msg := err.Error()
	return strings.Contains(msg, "timed out") || strings.Contains(msg, "i/o timeout")
}

// get returns an idle connection (reused=true) or a new one to a server
// not marked in skip.
func (p *pool) get(ctx context.Context, skip []bool) (c *conn, reused bool, err error) {
	var stale []*conn
	p.mu.Lock()
	for len(p.idle) > 0 && c == nil {
		last := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if last.lc.IsClosing() || time.Since(last.used) > p.cfg.PoolIdleTimeout || skip[last.server.index] {
			stale = append(stale, last)
			continue
		}
		c = last
	}
	p.mu.Unlock()
	for _, s := range stale {
		s.close()
	}
	if c != nil {
		return c, true, nil
	}
	c, err = p.dial(ctx, skip)
	return c, false, err
}

func (p *pool) put(c *conn) {
	c.used = time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// dial connects to the first server that answers, among those not in
// skip: servers in good health (or whose backoff is over) in
// configuration order, then the others; a server that failed is skipped
// while another attempt is probing it.
func (p *pool) dial(ctx context.Context, skip []bool) (*conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errClosed
	}
	now := time.Now()
	var first, last []int
	var errs []error
	for i := range p.servers {
		h := &p.health[i]
		switch {
		case skip[i]:
		case h.failed && h.probing:
			errs = append(errs, fmt.Errorf("%s: failed recently (another lookup is retrying it): %w", p.servers[i].url, h.err))
		case h.failed && now.Before(h.until):
			last = append(last, i)
		default:
			first = append(first, i)
		}
	}
	p.mu.Unlock()

	for _, i := range append(first, last...) {
		s := &p.servers[i]
		if !p.claim(i) {
			errs = append(errs, fmt.Errorf("%s: failed recently (another lookup is retrying it)", s.url))
			continue
		}
		c, err := p.dialOne(ctx, s)
		if err == nil {
			p.answered(i)
			return c, nil
		}
		p.mu.Lock()
		p.health[i].probing = false
		p.mu.Unlock()
		errs = append(errs, fmt.Errorf("%s: %w", s.url, err))
		if ctx.Err() != nil {
			break
		}
		p.markDown(ctx, s, err, isTimeout(err))
	}
	if len(errs) == 0 {
		return nil, errors.New("no ldap server left to try")
	}
	return nil, fmt.Errorf("no ldap server answered: %w", errors.Join(errs...))
}

// answered records that server i answered an LDAP request (a bind, a
// StartTLS or a read of the root DSE): it is in good health again.
func (p *pool) answered(i int) {
	p.mu.Lock()
	h := &p.health[i]
	wasDown := h.failed
	*h = health{prober: h.prober}
	p.setState(i, *h)
	p.mu.Unlock()
	if wasDown {
		p.log.Info("ldap server answers again", "server", p.servers[i].url)
	}
}

// allDown tells whether every server failed and has not answered since.
func (p *pool) allDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.health {
		if !h.failed {
			return false
		}
	}
	return true
}

// claim marks server i as being dialled. It fails when i failed and
// another attempt is already probing it.
func (p *pool) claim(i int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := &p.health[i]
	if h.failed {
		if h.probing {
			return false
		}
		h.probing = true
	}
	return true
}

// markDown remembers that s failed with err: it is tried after the others
// for the backoff, by one attempt at a time. When it hung, its idle
// connections are closed too (each would cost a timeout).
func (p *pool) markDown(ctx context.Context, s *server, err error, hung bool) {
	ops.LDAPErrors.WithLabelValues(s.url).Inc()
	var drop []*conn
	p.mu.Lock()
	h := &p.health[s.index]
	// Once per failure, not once per lookup that finds it still failing
	// (with every server refusing, each uncached login would log one per
	// server), unless it went from refusing to hanging or back.
	again := h.failed && h.hung == hung
	h.failed, h.until, h.err, h.hung = true, time.Now().Add(p.backoff), err, hung
	p.setState(s.index, *h)
	if !h.prober && !p.closed {
		if p.probeCtx == nil {
			p.probeCtx, p.cancelProbes = context.WithCancel(context.WithoutCancel(ctx))
		}
		h.prober = true
		p.probers.Add(1)
		go p.probe(p.probeCtx, s.index)
	}
	if hung {
		kept := p.idle[:0]
		for _, c := range p.idle {
			if c.server == s {
				drop = append(drop, c)
			} else {
				kept = append(kept, c)
			}
		}
		p.idle = kept
	}
	p.mu.Unlock()
	for _, c := range drop {
		c.close()
	}
	what := "ldap server failed; trying the others first"
	if hung {
		what = "ldap server does not answer (hung?); trying the others first"
	}
	level := slog.LevelWarn
	if again {
		level = slog.LevelDebug
	}
	p.log.Log(ctx, level, what, "server", s.url, "for", p.backoff.String(), "err", err)
}

// probe tries server i every p.every until it answers (or the pool is
// closed), one connection attempt at a time with the lookups that also
// probe it, and closes the connection it made: it is how the log and the
// metrics learn that a failed server answers again while lookups are
// served by pooled connections to another one.
func (p *pool) probe(ctx context.Context, i int) {
	defer p.probers.Done()
	s := &p.servers[i]
	tick := time.NewTicker(p.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p.mu.Lock()
		if !p.health[i].failed { // a lookup found it answering
			p.health[i].prober = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		if !p.claim(i) {
			continue // a lookup is probing it now
		}
		c, err := p.dialOne(ctx, s)
		if err == nil {
			c.close()
			p.answered(i)
			continue // the next tick ends the prober, unless it failed again meanwhile
		}
		p.mu.Lock()
		h := &p.health[i]
		h.probing = false
		if ctx.Err() == nil {
			h.err, h.hung = err, isTimeout(err)
			p.setState(i, *h)
		}
		p.mu.Unlock()
		if ctx.Err() == nil {
			ops.LDAPErrors.WithLabelValues(s.url).Inc()
			p.log.Debug("ldap server still fails", "server", s.url, "err", err)
		}
	}
}

// dialOne connects, starts TLS and binds, all within DialTimeout.
func (p *pool) dialOne(ctx context.Context, s *server) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	// The deadline bounds the TLS handshake, StartTLS and the bind; the
	// AfterFunc cuts them short when ctx ends first.
	deadline, _ := ctx.Deadline()
	_ = raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var nc net.Conn = raw
	if s.scheme == "ldaps" {
		conf, err := p.ca.tlsConfig(s.host)
		if err != nil {
			raw.Close()
			return nil, err
		}
		tc := tls.Client(raw, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tc
	}
	lc := ldap.NewConn(nc, s.scheme == "ldaps")
	lc.Start()
	lc.SetTimeout(p.cfg.DialTimeout)
	fail := func(what string, err error) (*conn, error) {
		lc.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if s.scheme == "ldap" && p.cfg.StartTLS {
		conf, err := p.ca.tlsConfig(s.host)
		if err != nil {
			return fail("StartTLS", err)
		}
		if err := lc.StartTLS(conf); err != nil {
			return fail("StartTLS", err)
		}
	}
	if p.bindDN != "" {
		pw, err := readPassword(p.cfg.BindPasswordFile)
		if err != nil {
			return fail("bind", err)
		}
		if err := lc.Bind(p.bindDN, pw); err != nil {
			return fail(fmt.Sprintf("bind as %s", p.bindDN), err)
		}
	} else {
		// Anonymous: a hung server accepts the TCP connection all the
		// same; only an answer tells that it works.
		_, err := lc.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases,
			1, 0, false, "(objectClass=*)", []string{"supportedLDAPVersion"}, nil))
		var le *ldap.Error
		if err != nil && (!errors.As(err, &le) || le.ResultCode >= ldap.LDAPResultOther) {
			return fail("read the root DSE", err)
		}
	}
	if !stop() {
		return fail("connect", context.Cause(ctx))
	}
	_ = raw.SetDeadline(time.Time{})
	lc.SetTimeout(p.cfg.Timeout)
	p.dials.Add(1)
	p.log.Debug("ldap connection opened", "server", s.url)
	return &conn{lc: lc, raw: raw, server: s, used: time.Now(), timeout: p.cfg.Timeout}, nil
}

// search runs one search within the operation timeout; when ctx ends
// first, the connection is cut (and then replaced).
func (c *conn) search(ctx context.Context, req *ldap.SearchRequest) (*ldap.SearchResult, error) {
	_ = c.raw.SetDeadline(time.Now().Add(c.timeout))
	stop := context.AfterFunc(ctx, func() { _ = c.raw.SetDeadline(time.Unix(1, 0)) })
	start := time.Now()
	res, err := c.lc.Search(req)
	ops.LDAPRequestDuration.WithLabelValues(c.server.url).Observe(time.Since(start).Seconds())
	if err != nil && !isCode(err, ldap.LDAPResultNoSuchObject) {
		ops.LDAPErrors.WithLabelValues(c.server.url).Inc()
	}
	if !stop() {
		c.broken = true
		if err == nil {
			err = fmt.Errorf("ldap search %q: %w", req.BaseDN, context.Cause(ctx))
		}
		return nil, err
	}
	_ = c.raw.SetDeadline(time.Time{})
	if err != nil {
		return res, fmt.Errorf("ldap search %q: %w", req.BaseDN, err)
	}
	return res, nil
}

// isBroken tells whether c must be thrown away after an operation that
// returned err.
func (c *conn) isBroken(err error) bool {
	if c.broken || c.lc.IsClosing() {
		return true
	}
	if err == nil {
		return false
	}
	if errors.Is(err, ldap.ErrSizeLimitExceeded) {
		return false // the client stopped reading a too-long answer
	}
	var le *ldap.Error
	if !errors.As(err, &le) {
		return true // not an LDAP result: network or protocol trouble
	}
	switch le.ResultCode {
	case ldap.LDAPResultBusy, ldap.LDAPResultUnavailable, ldap.LDAPResultUnwillingToPerform:
		return true // the server refuses work: try another
	}
	// Codes from 80 up are the client library's (timeouts, network).
	return le.ResultCode >= ldap.LDAPResultOther
}

func (c *conn) close() { _ = c.lc.Close() }

// close closes the idle connections; those in use are closed when they
// come back.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	if p.cancelProbes != nil {
		p.cancelProbes()
	}
	p.mu.Unlock()
	p.probers.Wait()
	p.dropIdle()
}

// dropIdle closes the idle connections.
func (p *pool) dropIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

package ldap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/ops"
)

// errClosed: the directory has been closed.
var errClosed = errors.New("ldap directory closed")

// cache remembers answers by name and coalesces concurrent lookups of the
// same name into one fetch (a login burst costs one search per name).
//
//   - An answer is fresh for ttl: returned without asking LDAP.
//   - "Not found" and "invalid entry" are remembered for neg.
//   - When a fetch fails (LDAP unavailable), an answer that went stale
//     less than stale ago is served instead, and the log says so.
//   - So it is when the fetch has not answered within staleWait (a hung
//     server answers nothing, not even an error), or at once when every
//     server failed lately: the caller is not kept waiting; the fetch
//     goes on and refreshes the entry if it succeeds.
//
// Fetches run in goroutines owned by the cache, on a context that outlives
// the caller who started them (other callers may be waiting) but not
// budget, nor close. Callers stop waiting when their own context ends.
type cache[V any] struct {
	kind string // "user" or "tool", for logs
	cacheOptions
	log  *slog.Logger
	now  func() time.Time
	down func() bool // every server failed lately; nil: never

	mu      sync.Mutex
	entries map[string]*cached[V]
	calls   map[string]*call[V]
	closed  bool
	wg      sync.WaitGroup
}

// cacheOptions are the cache's durations and bound (ldap.cache_ttl,
// stale_if_error, stale_wait, negative_ttl, cache_max_entries) and the
// budget of one fetch.
type cacheOptions struct {
	ttl, stale, staleWait, neg time.Duration
	max                        int
	budget                     time.Duration
}

type cached[V any] struct {
	val V
	err error // nil: a positive answer; else ErrNotFound/ErrInvalidEntry
	at  time.Time
}

type call[V any] struct {
	done        chan struct{}
	val         V
	err         error
	cancel      context.CancelFunc
	staleLogged bool // c.mu
}

func newCache[V any](kind string, o cacheOptions, log *slog.Logger) *cache[V] {
	return &cache[V]{
		kind: kind, cacheOptions: o, log: log,
		now:     time.Now,
		entries: map[string]*cached[V]{},
		calls:   map[string]*call[V]{},
	}
}

var (
	cacheHit   = ops.DirectoryCache.WithLabelValues("hit")
	cacheMiss  = ops.DirectoryCache.WithLabelValues("miss")
	cacheStale = ops.DirectoryCache.WithLabelValues("stale")
)

// get returns the answer for key: cached, or from fetch (shared with any
// concurrent get of the same key), or stale when fetch fails or is slow.
func (c *cache[V]) get(ctx context.Context, key string, fetch func(context.Context) (V, error)) (V, error) {
	var zero V
	c.mu.Lock()
	now := c.now()
	var stale *cached[V] // servable should LDAP fail or hang
	if e, ok := c.entries[key]; ok {
		age := now.Sub(e.at)
		if e.err == nil && age < c.ttl {
			c.mu.Unlock()
			cacheHit.Inc()
			return e.val, nil
		}
		if e.err != nil && age < c.neg {
			c.mu.Unlock()
			cacheHit.Inc()
			return zero, e.err
		}
		if e.err == nil && c.stale > 0 && age < c.ttl+c.stale {
			stale = e
		}
	}
	cacheMiss.Inc()
	cl, ok := c.calls[key]
	if !ok {
		if c.closed {
			c.mu.Unlock()
			return zero, fmt.Errorf("ldap %s %q: %w: %w", c.kind, key, auth.ErrUnavailable, errClosed)
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.budget)
		cl = &call[V]{done: make(chan struct{}), cancel: cancel}
		c.calls[key] = cl
		c.wg.Add(1)
		go c.run(fctx, key, cl, fetch)
	}
	c.mu.Unlock()

	var staleTimer <-chan time.Time
	if stale != nil && c.staleWait > 0 {
		wait := c.staleWait
		if c.down != nil && c.down() {
			// Every server failed lately: the fetch (which goes on, and
			// refreshes the entry if a server answers) is most likely a
			// probe of a hung server. No need to wait for it.
			wait = 0
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		staleTimer = t.C
	}
	select {
	case <-cl.done:
		return cl.val, cl.err
	case <-staleTimer:
		cacheStale.Inc()
		c.mu.Lock()
		first := !cl.staleLogged
		cl.staleLogged = true
		c.mu.Unlock()
		if first { // once per fetch, not once per login
			c.log.Warn("ldap has not answered in time; serving a stale cached answer while the lookup goes on",
				c.kind, key, "age", c.now().Sub(stale.at).Round(time.Second).String())
		}
		return stale.val, nil
	case <-ctx.Done():
		return zero, fmt.Errorf("ldap %s %q: gave up waiting: %w: %w", c.kind, key, auth.ErrUnavailable, context.Cause(ctx))
	}
}

func (c *cache[V]) run(ctx context.Context, key string, cl *call[V], fetch func(context.Context) (V, error)) {
	defer c.wg.Done()
	defer cl.cancel()
	val, err := fetch(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	switch {
	case err == nil:
		c.entries[key] = &cached[V]{val: val, at: now}
	case errors.Is(err, auth.ErrNotFound) || errors.Is(err, auth.ErrInvalidEntry):
		// A real answer: it also replaces a positive entry, so that a
		// removed or disabled account loses access even when LDAP goes
		// down later.
		if c.neg > 0 {
			c.entries[key] = &cached[V]{err: err, at: now}
		} else {
			delete(c.entries, key)
		}
	default:
		if e, ok := c.entries[key]; ok && e.err == nil && c.stale > 0 && now.Sub(e.at) < c.ttl+c.stale {
			cacheStale.Inc()
			c.log.Warn("ldap unavailable; serving a stale cached answer",
				c.kind, key, "age", now.Sub(e.at).Round(time.Second).String(), "err", err)
			val, err = e.val, nil
		}
	}
	if len(c.entries) > c.max {
		c.evict(now)
	}
	delete(c.calls, key)
	cl.val, cl.err = val, err
	close(cl.done)
}

// evict drops entries that can no longer be served, then negative ones,
// then any, until the cache is back under max. c.mu is held.
func (c *cache[V]) evict(now time.Time) {
	for k, e := range c.entries {
		if (e.err == nil && now.Sub(e.at) >= c.ttl+c.stale) || (e.err != nil && now.Sub(e.at) >= c.neg) {
			delete(c.entries, k)
		}
	}
	for k, e := range c.entries {
		if len(c.entries) <= c.max {
			return
		}
		if e.err != nil {
			delete(c.entries, k)
		}
	}
	for k := range c.entries {
		if len(c.entries) <= c.max {
			return
		}
		delete(c.entries, k)
	}
}

// close cancels the fetches in flight and waits for them.
func (c *cache[V]) close() {
	c.mu.Lock()
	c.closed = true
	for _, cl := range c.calls {
		cl.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

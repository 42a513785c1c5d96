package ldap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/auth"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newTestCache(t *testing.T, max int) (*cache[string], *clock, *logs) {
	l := &logs{}
	o := cacheOptions{ttl: time.Minute, stale: 15 * time.Minute, neg: 10 * time.Second, max: max, budget: time.Second}
	c := newCache[string]("user", o, slog.New(slog.NewTextHandler(l, nil)))
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c.now = clk.now
	t.Cleanup(c.close)
	return c, clk, l
}

var errDown = fmt.Errorf("test: %w", auth.ErrUnavailable)

func TestCacheLifetimes(t *testing.T) {
	t.Parallel()
	type step struct {
		advance time.Duration
		fetch   error  // what LDAP answers, if asked
		want    string // "" with wantErr
		wantErr error
		fetched bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"fresh answers are reused for the ttl", []step{
			{0, nil, "v1", nil, true},
			{59 * time.Second, nil, "v1", nil, false},
			{time.Second, nil, "v2", nil, true},
		}},
		{"stale answer when LDAP is down, within stale_if_error", []step{
			{0, nil, "v1", nil, true},
			{time.Minute, errDown, "v1", nil, true},
			{14 * time.Minute, errDown, "v1", nil, true},
			{time.Minute, errDown, "", auth.ErrUnavailable, true},
		}},
		{"not found is cached for negative_ttl", []step{
			{0, auth.ErrNotFound, "", auth.ErrNotFound, true},
			{9 * time.Second, nil, "", auth.ErrNotFound, false},
			{time.Second, nil, "v2", nil, true},
		}},
		{"not found replaces a positive answer; no stale after it", []step{
			{0, nil, "v1", nil, true},
			{time.Minute, auth.ErrNotFound, "", auth.ErrNotFound, true},
			{10 * time.Second, errDown, "", auth.ErrUnavailable, true},
		}},
		{"invalid entry is cached like not found", []step{
			{0, auth.ErrInvalidEntry, "", auth.ErrInvalidEntry, true},
			{time.Second, nil, "", auth.ErrInvalidEntry, false},
		}},
		{"unavailable is never cached", []step{
			{0, errDown, "", auth.ErrUnavailable, true},
			{0, nil, "v2", nil, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, clk, _ := newTestCache(t, 100)
			n := 0
			for i, s := range tt.steps {
				clk.add(s.advance)
				fetched := false
				got, err := c.get(t.Context(), "alice", func(context.Context) (string, error) {
					fetched = true
					n++
					if s.fetch != nil {
						return "", s.fetch
					}
					return fmt.Sprintf("v%d", n), nil
				})
				if got != s.want || !errors.Is(err, s.wantErr) || (s.wantErr == nil && err != nil) || fetched != s.fetched {
					t.Fatalf("step %d: got %q, %v, fetched=%v; want %q, %v, fetched=%v", i, got, err, fetched, s.want, s.wantErr, s.fetched)
				}
			}
		})
	}
}

func TestCacheCoalesces(t *testing.T) {
	t.Parallel()
	c, _, _ := newTestCache(t, 100)
	release := make(chan struct{})
	var fetches atomic.Int32
	fetch := func(context.Context) (string, error) {
		fetches.Add(1)
		<-release
		return "v", nil
	}
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if v, err := c.get(t.Context(), "alice", fetch); v != "v" || err != nil {
				t.Errorf("get = %q, %v", v, err)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := fetches.Load(); n != 1 {
		t.Errorf("100 concurrent lookups made %d fetches; want 1", n)
	}
}

// A caller that gives up does not cancel the fetch others wait for; its
// answer is cached.
func TestCacheCallerGivesUp(t *testing.T) {
	t.Parallel()
	c, _, _ := newTestCache(t, 100)
	release := make(chan struct{})
	fetch := func(ctx context.Context) (string, error) {
		select {
		case <-release:
			return "v", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.get(ctx, "alice", fetch); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: %v", err)
	}
	close(release)
	if v, err := c.get(t.Context(), "alice", fetch); v != "v" || err != nil {
		t.Fatalf("second caller: %q, %v", v, err)
	}
}

func TestCacheBounded(t *testing.T) {
	t.Parallel()
	c, clk, _ := newTestCache(t, 10)
	for i := range 50 {
		clk.add(time.Second)
		name := fmt.Sprintf("u%d", i)
		_, _ = c.get(t.Context(), name, func(context.Context) (string, error) {
			if i%2 == 0 {
				return "", auth.ErrNotFound
			}
			return name, nil
		})
	}
	if n := len(c.entries); n > 10 {
		t.Errorf("%d entries; max is 10", n)
	}
}

func TestCacheClosed(t *testing.T) {
	t.Parallel()
	c, _, _ := newTestCache(t, 10)
	c.close()
	if _, err := c.get(t.Context(), "alice", func(context.Context) (string, error) { return "v", nil }); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("closed cache: %v", err)
	}
}

// A fetch that neither answers nor fails (a hung server) does not keep a
// caller with a servable stale answer waiting past staleWait; the fetch
// goes on and refreshes the entry when it ends. A caller with nothing
// cached reads "unavailable" when its own deadline comes.
func TestCacheStaleWait(t *testing.T) {
	t.Parallel()
	c, clk, l := newTestCache(t, 100)
	c.staleWait = 100 * time.Millisecond
	c.budget = 10 * time.Second
	if v, err := c.get(t.Context(), "alice", func(context.Context) (string, error) { return "v1", nil }); v != "v1" || err != nil {
		t.Fatalf("first get: %q, %v", v, err)
	}
	clk.add(2 * time.Minute) // expired, within stale_if_error
	release := make(chan struct{})
	hung := func(ctx context.Context) (string, error) {
		select {
		case <-release:
			return "v2", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	v, err := c.get(ctx, "alice", hung)
	if el := time.Since(start); v != "v1" || err != nil || el > time.Second {
		t.Fatalf("hung fetch: %q, %v after %s; want the stale v1 after about 100ms", v, err, el)
	}
	l.mustContain(t, "has not answered in time", "serving a stale cached answer", "user=alice")

	// Nothing cached: the caller's deadline ends the wait, as unavailable.
	short, cancel2 := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel2()
	if _, err := c.get(short, "bob", hung); !errors.Is(err, auth.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hung fetch, nothing cached: %v; want ErrUnavailable and the deadline", err)
	}

	close(release) // the fetch ends: the entry is fresh again
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err := c.get(t.Context(), "alice", func(context.Context) (string, error) { return "", errDown })
		if v == "v2" && err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fetch that went on did not refresh the entry: %q, %v", v, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// When every server failed lately, a caller with a servable stale answer
// does not wait even staleWait: the fetch in flight is most likely a probe
// of a hung server.
func TestCacheStaleAtOnceWhenAllDown(t *testing.T) {
	t.Parallel()
	c, clk, _ := newTestCache(t, 100)
	c.staleWait = 5 * time.Second
	down := atomic.Bool{}
	c.down = down.Load
	if _, err := c.get(t.Context(), "alice", func(context.Context) (string, error) { return "v1", nil }); err != nil {
		t.Fatal(err)
	}
	clk.add(2 * time.Minute)
	release := make(chan struct{})
	defer close(release)
	hung := func(ctx context.Context) (string, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "", errDown
	}
	down.Store(true)
	start := time.Now()
	if v, err := c.get(t.Context(), "alice", hung); v != "v1" || err != nil || time.Since(start) > time.Second {
		t.Errorf("every server down: %q, %v after %s; want the stale v1 at once", v, err, time.Since(start))
	}
}

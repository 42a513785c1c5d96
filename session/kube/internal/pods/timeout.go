package pods

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// requestTimeout bounds each HTTP request of the start-up client by the
// API timeout (kube.api_timeout), from the moment it is sent. client-go
// waits for its rate limiter under the request's context before it sends,
// so a deadline on that context would also count the time a login spends
// queued behind a storm's creations: at kube.qps 50, a storm of 200 first
// logins (five requests each) queues for 20 s, and logins failed as if the
// API server were down. The wait in the queue is bounded by the login's own
// context instead (the client gone, the server draining).
//
// A request that gets no answer within the API timeout while the API
// server answered other requests in that time met a slow API server, not
// a gone one (200 pods being made at once on a small control plane): it
// is waited for longer, an API timeout at a time, for up to
// kube.start_timeout in all, as long as the API server keeps answering
// others. It is not sent again: a resent creation queues once more behind
// the storm while the API server still works on the one given up on (a
// 200-account storm on 2026-12-01 resent 26 creations in its first two
// minutes, and the API server answered 429 to 25 requests that run, where
// raw client-go, which waits, met none). An API server
// that answers nothing (stopped, unreachable) still fails the request
// after the API timeout, so the user reads at once that the cluster is
// unavailable.
//
// Watches are not bounded here (they last on purpose, and client-go does
// not rate-limit them); neither are streams.
type requestTimeout struct {
	next    http.RoundTripper
	timeout time.Duration
	slowFor time.Duration // kube.start_timeout
	// answered is marked by forbiddenRetry, which every client's
	// requests pass through (this one's inside requestTimeout).
	answered *lastAnswer
	project  string
	log      *slog.Logger
}

// lastAnswer is when the API server last answered a request.
type lastAnswer struct{ nanos atomic.Int64 }

func (l *lastAnswer) mark(now time.Time) { l.nanos.Store(now.UnixNano()) }

// since reports whether the API server answered at t or after.
func (l *lastAnswer) since(t time.Time) bool { return l.nanos.Load() >= t.UnixNano() }

// errNoAnswer ends a request the API server did not answer in time.
var errNoAnswer = errors.New("no answer within kube.api_timeout")

func (t *requestTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.timeout <= 0 || streaming(req) || watching(req) {
		return t.next.RoundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	sent := time.Now()
	w := &watchdog{}
	w.mu.Lock()
	w.timer = time.AfterFunc(t.timeout, func() {
		now := time.Now()
		if t.answered.since(now.Add(-t.timeout)) && now.Sub(sent)+t.timeout <= t.slowFor {
			if w.extend(t.timeout) == 1 {
				t.log.Info("the API server is slow: a request got no answer within kube.api_timeout while others did; waiting longer (up to kube.start_timeout)",
					"project", t.project, "method", req.Method, "path", req.URL.Path, "timeout", t.timeout)
			}
			return
		}
		cancel(errNoAnswer)
	})
	w.mu.Unlock()
	stop := func() {
		w.stop()
		cancel(nil)
	}
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		stop()
		if errors.Is(context.Cause(ctx), errNoAnswer) {
			return nil, fmt.Errorf("%w (%s): %w", errNoAnswer, t.timeout, context.DeadlineExceeded)
		}
		return nil, err
	}
	// The bound covers reading the answer too; it ends with the body.
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: stop}
	return resp, nil
}

// watchdog is the timer of one request of requestTimeout.
type watchdog struct {
	mu       sync.Mutex
	timer    *time.Timer
	extended int
	stopped  bool
}

// extend arms the timer again for d, unless stopped meanwhile; it returns
// how many times it was extended.
func (w *watchdog) extend(d time.Duration) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.timer.Reset(d)
		w.extended++
	}
	return w.extended
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}

// watching says whether req is a watch (?watch=true or =1).
func watching(req *http.Request) bool {
	w := req.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

package pods

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
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
// A request that times out while the API server answered other requests
// in the meantime met a slow API server, not a gone one (200 pods being
// made at once on a small control plane): it is sent again, for up to
// kube.start_timeout in all, and AlreadyExists from a creation that did
// go through the first time is what the callers expect anyway. An API
// server that answers nothing (stopped, unreachable) still fails the
// request after the API timeout, so the user reads at once that the
// cluster is unavailable.
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

func (t *requestTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.timeout <= 0 || streaming(req) || watching(req) {
		return t.next.RoundTrip(req)
	}
	first := time.Now()
	for attempt := 1; ; attempt++ {
		sent := time.Now()
		ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
		r := req.WithContext(ctx)
		if attempt > 1 {
			body, err := req.GetBody()
			if err != nil {
				cancel()
				return nil, err
			}
			r.Body = body
		}
		resp, err := t.next.RoundTrip(r)
		if err == nil {
			// The deadline covers reading the answer too; it ends with
			// the body.
			resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		}
		cancel()
		slow := req.Context().Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) &&
			t.answered.since(sent) && replayable(req)
		if !slow || time.Since(first)+t.timeout > t.slowFor {
			return nil, err
		}
		t.log.Info("the API server is slow: a request got no answer within kube.api_timeout while others did; sending it again",
			"project", t.project, "method", req.Method, "path", req.URL.Path, "attempt", attempt, "timeout", t.timeout)
	}
}

// watching says whether req is a watch (?watch=true or =1).
func watching(req *http.Request) bool {
	w := req.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

// replayable says whether req's body can be sent again.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
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

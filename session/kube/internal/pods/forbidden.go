package pods

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// A kube-apiserver that has just started serves requests before its
// authorizer's caches have synced (its /readyz reports informer-sync and
// the RBAC post-start hooks as not done yet), and for that while it
// answers 403 Forbidden to what bastion's ServiceAccount may do: the
// chaos runs saw about a second of it after every API server restart,
// and users read "internal error". client-go does not retry a 403 (it
// retries 429 and 5xx with Retry-After), and neither should bastion in
// general: a real RBAC mistake must reach the operator's log and the
// user at once.
//
// So a 403 is retried only when it is an authorization denial (not an
// admission refusal such as a quota: those 403s are answers) and the API
// server was unreachable shortly before (restartWindow) or is not ready
// now. The retries back off up to forbiddenRetryFor in all, within the
// request's own context (the login's budget); what still reads 403 then
// is returned as it came, for the caller's error path.

var (
	// restartWindow: how long after the API server was last unreachable a
	// 403 may be its authorizer still syncing.
	restartWindow = 30 * time.Second
	// forbiddenRetryFor bounds the retries of one request.
	forbiddenRetryFor = 5 * time.Second
)

// unreachableSince is when a cluster's API server last could not be
// reached: a transport error or a 502/503/504. It lives in the Cluster,
// across client reloads.
type unreachableSince struct{ nanos atomic.Int64 }

func (u *unreachableSince) mark(now time.Time) { u.nanos.Store(now.UnixNano()) }

// within reports whether the API server was unreachable in the d before
// now.
func (u *unreachableSince) within(now time.Time, d time.Duration) bool {
	n := u.nanos.Load()
	return n != 0 && now.Sub(time.Unix(0, n)) < d
}

// retryForbidden is the rule: retry a 403 that denies authorization when
// the API server was unreachable moments ago or says it is not ready.
func retryForbidden(denial, recentlyUnreachable bool, ready readiness) bool {
	return denial && (recentlyUnreachable || ready == notReady)
}

type readiness int

const (
	readyUnknown readiness = iota // /readyz could not be read or is not served
	ready
	notReady
)

// isDenial reports whether a 403's body is the authorizer's denial
// (`User "..." cannot VERB resource ...`) rather than an admission
// plugin's refusal.
func isDenial(body []byte) bool {
	s := string(body) // JSON (quotes escaped) or protobuf
	return (strings.Contains(s, `User \"`) || strings.Contains(s, `User "`)) && strings.Contains(s, ` cannot `)
}

// forbiddenRetry is the transport wrapper that applies the rule.
type forbiddenRetry struct {
	next     http.RoundTripper
	down     *unreachableSince
	answered *lastAnswer // any answer, for requestTimeout's slow-or-gone rule
	project  string
	log      *slog.Logger
}

func (f *forbiddenRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.roundTrip(req)
	if err != nil || resp.StatusCode != http.StatusForbidden || streaming(req) ||
		(req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
		return resp, err
	}
	start := time.Now()
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		body := peekBody(resp)
		if !retryForbidden(isDenial(body), f.down.within(time.Now(), restartWindow), f.readiness(req)) {
			return resp, nil
		}
		if time.Since(start)+backoff > forbiddenRetryFor || !sleep(req.Context(), backoff) {
			f.log.Warn("the API server still refuses (403) after it was unreachable or not ready; giving up",
				"project", f.project, "method", req.Method, "path", req.URL.Path, "attempts", attempt, "answer", string(body))
			return resp, nil
		}
		backoff = min(2*backoff, time.Second)
		again := req.Clone(req.Context())
		if req.GetBody != nil {
			if again.Body, err = req.GetBody(); err != nil {
				return resp, nil
			}
		}
		next, err := f.roundTrip(again)
		if err != nil {
			return resp, nil // the 403, already read: the caller's error path
		}
		if next.StatusCode != http.StatusForbidden {
			f.log.Info("the API server refused a request (403) while it was starting up; a retry got through",
				"project", f.project, "method", req.Method, "path", req.URL.Path, "attempts", attempt+1, "after", time.Since(start).Round(time.Millisecond))
			return next, nil
		}
		resp = next
	}
}

// streaming: an exec, attach or port-forward upgrade, which its round
// tripper cannot send twice.
func streaming(req *http.Request) bool {
	p := req.URL.Path
	return req.Header.Get("Upgrade") != "" ||
		strings.HasSuffix(p, "/exec") || strings.HasSuffix(p, "/attach") || strings.HasSuffix(p, "/portforward")
}

// roundTrip is one request; it notes when the API server is unreachable
// (not from a stream's upgrade, whose round tripper also fails for an
// upgrade refused).
func (f *forbiddenRetry) roundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(req)
	if err == nil && resp.StatusCode < 500 && f.answered != nil {
		f.answered.mark(time.Now())
	}
	switch {
	case streaming(req):
	case err != nil && req.Context().Err() == nil:
		f.down.mark(time.Now())
	case err == nil && (resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable ||
		resp.StatusCode == http.StatusGatewayTimeout):
		f.down.mark(time.Now())
	}
	return resp, err
}

// readiness asks the API server's /readyz, with req's credentials.
func (f *forbiddenRetry) readiness(req *http.Request) readiness {
	ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
	defer cancel()
	u := *req.URL
	u.Path, u.RawPath, u.RawQuery = "/readyz", "", ""
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return readyUnknown
	}
	r.Header = req.Header.Clone()
	r.Header.Del("Content-Type")
	resp, err := f.next.RoundTrip(r)
	if err != nil {
		return notReady // it answered a moment ago: it is going away again
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		return ready
	case resp.StatusCode >= 500:
		return notReady
	}
	return readyUnknown
}

// peekBody reads (a bounded part of) resp's body and puts it back.
func peekBody(resp *http.Response) []byte {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

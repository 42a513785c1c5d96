package pods

import (
	"context"
	"io"
	"net/http"
	"time"
)

// requestTimeout bounds each HTTP request of the start-up client by the
// API timeout (kube.api_timeout), from the moment it is sent. client-go
// waits for its rate limiter under the request's context before it sends,
// so a deadline on that context would also count the time a login spends
// queued behind a storm's creations: at kube.qps 50, a storm of 200 first
// logins (five requests each) queues for 20 s, and logins failed as if the
// API server were down. The wait in the queue is bounded by the login's own
// context instead (the client gone, the server draining). Watches are not
// bounded here (they last on purpose, and client-go does not rate-limit
// them); neither are streams.
type requestTimeout struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *requestTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.timeout <= 0 || streaming(req) || watching(req) {
		return t.next.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	// The deadline covers reading the answer too; it ends with the body.
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
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

package pods

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/config"
)

// testCluster is a Cluster of project tools whose API server is handler,
// with kube.qps and burst 1 and the given API timeout.
func testCluster(t *testing.T, handler http.HandlerFunc, apiTimeout time.Duration) *Client {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, srv.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	k := config.Default().Kube
	k.QPS, k.Burst, k.APITimeout = 1, 1, apiTimeout
	k.Clusters = []config.KubeCluster{{Name: "tools", Kubeconfig: kubeconfig}}
	c, err := NewCluster(&k, k.Clusters[0], slog.New(slog.NewTextHandler(io.Discard, nil))).Current()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The API timeout bounds a start-up request once it is sent, not the wait
// in the rate limiter's queue: in the 200-account login storm, 21 logins
// read "the cluster is unavailable" because their creations spent
// kube.api_timeout queued behind the others'. Here four namespaces at
// qps 1 queue for 3 s with an API timeout of 500 ms, and all are made;
// a request the API server does not answer still fails after the timeout.
func TestStartUpTimeoutExcludesTheQueue(t *testing.T) {
	t.Parallel()
	c := testCluster(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/namespaces" && r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			if strings.Contains(string(body), "hung") {
				<-r.Context().Done()
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}`)
	}, 500*time.Millisecond)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = c.CreateNamespace(t.Context(), fmt.Sprintf("user-%d", i)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("namespace %d, queued behind the others: %v", i, err)
		}
	}
	start := time.Now()
	_, err := c.CreateNamespace(t.Context(), "hung")
	if took := time.Since(start); err == nil || !Unavailable(err) || took > 3*time.Second {
		t.Errorf("a request the API server does not answer: %v after %s, want unavailable after about 500ms", err, took)
	}
}

// A start-up request that gets no answer within the API timeout while
// the API server answers other requests met a slow API server (the
// 200-account storm: 14 logins read "the cluster is unavailable" after
// creations took over 10 s to be answered while others were): it is
// waited for, not given up on, and not sent again (resent creations
// queued again behind the storm, and the API server answered 429).
func TestSlowAPIServerWaitedFor(t *testing.T) {
	t.Parallel()
	var slowSeen atomic.Int32
	c := testCluster(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			if strings.Contains(string(body), "slow") {
				slowSeen.Add(1)
				select { // answered after three API timeouts
				case <-r.Context().Done():
					return
				case <-time.After(4500 * time.Millisecond):
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}`)
	}, 1500*time.Millisecond) // the session's requests below, at kube.qps 1, are answered in every 1.5 s
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { // a session's requests, answered meanwhile
		for ctx.Err() == nil {
			_, _ = c.Get(ctx, "user-a", "x")
			time.Sleep(50 * time.Millisecond)
		}
	})
	if _, err := c.CreateNamespace(t.Context(), "slow"); err != nil {
		t.Fatalf("a slow creation, while the API server answered others: %v", err)
	}
	if n := slowSeen.Load(); n != 1 {
		t.Errorf("the slow creation was sent %d times, want once", n)
	}
}

// A login storm's creations wait for the start-up client's rate limiter,
// never in front of a running session's requests: with kube.qps 1 and
// burst 1, five namespaces queue for seconds while a pod's Get (a
// session's) is answered at once.
func TestStartUpHasItsOwnRateLimit(t *testing.T) {
	t.Parallel()
	c := testCluster(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}`)
	}, config.Default().Kube.APITimeout)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range 5 {
		wg.Go(func() { _, _ = c.CreateNamespace(ctx, fmt.Sprintf("user-%d", i)) })
	}
	time.Sleep(200 * time.Millisecond) // the storm has begun: the limiter's one token is spent
	start := time.Now()
	if _, err := c.Get(ctx, "user-a", "x"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("a session's request waited %s behind the start-up client's queue", took)
	}
}

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
	"sync"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/config"
)

// A login storm's creations wait for the start-up client's rate limiter,
// never in front of a running session's requests: with kube.qps 1 and
// burst 1, five namespaces queue for seconds while a pod's Get (a
// session's) is answered at once.
func TestStartUpHasItsOwnRateLimit(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}`)
	}))
	defer srv.Close()
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
	k.QPS, k.Burst = 1, 1
	k.Clusters = []config.KubeCluster{{Name: "tools", Kubeconfig: kubeconfig}}
	cl := NewCluster(&k, k.Clusters[0], slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, err := cl.Current()
	if err != nil {
		t.Fatal(err)
	}
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

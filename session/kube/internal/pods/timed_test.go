package pods

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bastion-ssh/bastion/ops"
)

func TestAPIResource(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]string{
		"/api/v1/namespaces":                                                 "namespaces",
		"/api/v1/namespaces/alice":                                           "namespaces",
		"/api/v1/namespaces/alice/pods":                                      "pods",
		"/api/v1/namespaces/alice/pods/shell-alice-1a2b":                     "pods",
		"/api/v1/namespaces/alice/pods/shell-alice-1a2b/exec":                "pods/exec",
		"/api/v1/namespaces/alice/pods/shell-alice-1a2b/portforward":         "pods/portforward",
		"/api/v1/namespaces/alice/serviceaccounts/bastion-shell":             "serviceaccounts",
		"/apis/rbac.authorization.k8s.io/v1/namespaces/alice/rolebindings/x": "rolebindings",
		"/api/v1/nodes": "nodes",
		"/readyz":       "readyz",
		"/version":      "version",
		"/api/v1":       "other",
		"/apis":         "other",
		"/metrics":      "other",
		"/api/v1/namespaces/alice/pods/p/exec/extra":                                "other",
		"/api/v1/namespaces/alice/Pods":                                             "other",
		"/apis/rbac.authorization.k8s.io/v1/namespaces/alice/rolebindings/x/status": "rolebindings/status",
	} {
		if got := apiResource(path); got != want {
			t.Errorf("apiResource(%q) = %q, want %q", path, got, want)
		}
	}
}

// Every request bastion sends is timed by project, method and resource.
func TestRequestsTimed(t *testing.T) {
	t.Parallel()
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"ns"}}`)
	})
	cl := fakeClusterNamed(t, "timedproject", api, io.Discard)
	client, err := cl.Client()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := client.Get(t.Context(), "ns", "p"); err != nil {
			t.Fatal(err)
		}
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(ops.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	want := `bastion_kube_request_duration_seconds_count{cluster="timedproject",method="GET",resource="pods"} 3`
	if !strings.Contains(rec.Body.String(), want) {
		t.Errorf("metrics lack %s", want)
	}
}

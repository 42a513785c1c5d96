package pods

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/bastion-ssh/bastion/config"
)

// The rule alone: only an authorization denial, and only when the API
// server was unreachable moments ago or says it is not ready.
func TestRetryForbiddenRule(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		denial, recent bool
		ready          readiness
		want           bool
	}{
		{denial: true, recent: true, ready: ready, want: true},
		{denial: true, recent: false, ready: notReady, want: true},
		{denial: true, recent: false, ready: ready, want: false},        // a real RBAC mistake
		{denial: true, recent: false, ready: readyUnknown, want: false}, // /readyz not served
		{denial: false, recent: true, ready: notReady, want: false},     // an admission refusal
	} {
		if got := retryForbidden(c.denial, c.recent, c.ready); got != c.want {
			t.Errorf("retryForbidden(%+v) = %v", c, got)
		}
	}
	for body, want := range map[string]bool{
		denialBody: true,
		`{"kind":"Status","status":"Failure","message":"pods \"p\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1","reason":"Forbidden","code":403}`: false,
		`pods "p" is forbidden: User "system:serviceaccount:b:b" cannot get resource "pods"`:                                                                                            true,
	} {
		if got := isDenial([]byte(body)); got != want {
			t.Errorf("isDenial(%s) = %v", body, got)
		}
	}
}

const denialBody = `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"p\" is forbidden: User \"system:serviceaccount:bastion:bastion\" cannot get resource \"pods\" in API group \"\" in the namespace \"ns\"","reason":"Forbidden","details":{"name":"p","kind":"pods"},"code":403}`

const quotaBody = `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"p\" is forbidden: exceeded quota: q","reason":"Forbidden","details":{"name":"p","kind":"pods"},"code":403}`

const podBody = `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"ns","uid":"u1"}}`

// fakeAPI answers GET pod ns/p with its script, one answer a request (the
// last one repeats), and /readyz with readyz.
type fakeAPI struct {
	mu     sync.Mutex
	script []int // 200, 403 (denial), 4030 (quota), 503
	readyz int
	gets   int
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path == "/readyz" {
		w.WriteHeader(f.readyz)
		return
	}
	if r.URL.Path != "/api/v1/namespaces/ns/pods/p" {
		http.NotFound(w, r)
		return
	}
	f.gets++
	code := f.script[0]
	if len(f.script) > 1 {
		f.script = f.script[1:]
	}
	switch code {
	case 200:
		fmt.Fprint(w, podBody)
	case 403:
		w.WriteHeader(403)
		fmt.Fprint(w, denialBody)
	case 4030:
		w.WriteHeader(403)
		fmt.Fprint(w, quotaBody)
	default:
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","code":%d}`, code)
	}
}

func (f *fakeAPI) set(readyz int, script ...int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readyz, f.script, f.gets = readyz, script, 0
}

func (f *fakeAPI) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets
}

// fakeCluster is a Cluster whose kubeconfig points at api.
func fakeCluster(t *testing.T, api http.Handler, log io.Writer) *Cluster {
	t.Helper()
	return fakeClusterNamed(t, "tools", api, log)
}

// fakeClusterNamed is fakeCluster for project name.
func fakeClusterNamed(t *testing.T, name string, api http.Handler, log io.Writer) *Cluster {
	t.Helper()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+srv.URL+`"}}]
users: [{name: u, user: {token: secret}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	k := config.Default().Kube
	return NewCluster(&k, config.KubeCluster{Name: name, Kubeconfig: kc}, slog.New(slog.NewTextHandler(log, nil)))
}

// Through a real client-go clientset on HTTP: a 403 denial right after
// the API server was unreachable (or while it is not ready) is retried
// until it goes away; a denial from a ready API server that was not
// unreachable, and an admission refusal, are returned at once; a denial
// that lasts is returned after the bounded retries, with a warning.
func TestForbiddenRetried(t *testing.T) {
	restore := forbiddenRetryFor
	forbiddenRetryFor = 1500 * time.Millisecond
	t.Cleanup(func() { forbiddenRetryFor = restore })

	for _, c := range []struct {
		name        string
		unreachable bool // a 503 first
		readyz      int
		script      []int
		ok          bool
		gets        int
		warn        bool
	}{
		{name: "after unreachable", unreachable: true, readyz: 200, script: []int{403, 403, 200}, ok: true, gets: 3},
		{name: "not ready", readyz: 500, script: []int{403, 200}, ok: true, gets: 2},
		{name: "real RBAC mistake", readyz: 200, script: []int{403}, gets: 1},
		{name: "readyz not served", readyz: 404, script: []int{403}, gets: 1},
		{name: "admission refusal after unreachable", unreachable: true, readyz: 200, script: []int{4030}, gets: 1},
		{name: "denial that lasts", unreachable: true, readyz: 200, script: []int{403}, gets: 4, warn: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			api := &fakeAPI{}
			var log strings.Builder
			var logMu sync.Mutex
			cl := fakeCluster(t, api, writerFunc(func(p []byte) (int, error) {
				logMu.Lock()
				defer logMu.Unlock()
				return log.Write(p)
			}))
			client, err := cl.Client()
			if err != nil {
				t.Fatal(err)
			}
			if c.unreachable {
				api.set(c.readyz, 503)
				if _, err := client.Get(t.Context(), "ns", "p"); !Unavailable(err) {
					t.Fatalf("a 503: %v", err)
				}
			}
			api.set(c.readyz, c.script...)
			start := time.Now()
			pod, err := client.Get(t.Context(), "ns", "p")
			took := time.Since(start)
			if c.ok && (err != nil || pod.Name != "p") {
				t.Errorf("got %v, %v; want the pod", pod, err)
			}
			if !c.ok && !apierrors.IsForbidden(err) {
				t.Errorf("got %v; want the 403", err)
			}
			if n := api.count(); n != c.gets && !(c.warn && n >= 3 && n <= c.gets) { // a slow machine may fit one retry fewer
				t.Errorf("%d requests, want %d", n, c.gets)
			}
			if took > forbiddenRetryFor+time.Second {
				t.Errorf("took %v; the retries are bounded by %v", took, forbiddenRetryFor)
			}
			logMu.Lock()
			warned := strings.Contains(log.String(), "level=WARN")
			logMu.Unlock()
			if warned != c.warn {
				t.Errorf("warning logged: %v, want %v:\n%s", warned, c.warn, log.String())
			}
		})
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

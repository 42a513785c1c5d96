package pods

import (
	"net/http"
	"strings"
	"time"

	"github.com/bastion-ssh/bastion/ops"
)

// timedRequests observes every request to a project's API server in
// ops.KubeRequestDuration: the time from sending it to the answer's
// headers, which is the API server's queueing (priority and fairness)
// and work. It sits under the client's rate limiter, whose queue is not
// counted.
type timedRequests struct {
	next    http.RoundTripper
	project string
}

func (t *timedRequests) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	ops.KubeRequestDuration.WithLabelValues(t.project, req.Method, apiResource(req.URL.Path)).Observe(time.Since(start).Seconds())
	return resp, err
}

// WrappedRoundTripper lets client-go see the transport underneath.
func (t *timedRequests) WrappedRoundTripper() http.RoundTripper { return t.next }

// apiResource is the resource an API path names, with its subresource
// ("pods", "pods/exec", "namespaces", "rolebindings"), or the path
// itself for the few others bastion asks ("readyz", "version"), so that
// the metric's label values stay few: "other" for anything else.
func apiResource(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:] // api, v1
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:] // apis, group, version
	case len(parts) == 1 && (parts[0] == "readyz" || parts[0] == "livez" || parts[0] == "healthz" || parts[0] == "version"):
		return parts[0]
	default:
		return "other"
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:] // namespaces, NAME: a namespaced resource
	}
	var res string
	switch len(parts) {
	case 0:
		return "other" // /api/v1: discovery
	case 1, 2:
		res = parts[0]
	case 3:
		res = parts[0] + "/" + parts[2]
	default:
		return "other"
	}
	for _, c := range res {
		if !(c >= 'a' && c <= 'z' || c == '/') {
			return "other"
		}
	}
	return res
}

package shellimage

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// An image marked unavailable goes last in the order until a probe that
// started after the mark finds it working; readiness fails only when no
// image of a cluster starts while the cluster answers.
func TestMarksAndReadiness(t *testing.T) {
	t.Parallel()
	h, cl := testHealth(t, "r/shell:p", "r/shell@sha256:01", "r/shell@sha256:00")
	h.MarkUnavailable(cl, "r/shell:p", "ErrImageNeverPull")
	if got := h.Order(cl); !slices.Equal(got, []string{"r/shell@sha256:01", "r/shell@sha256:00", "r/shell:p"}) {
		t.Errorf("order after the failure %q", got)
	}
	// A probe that started before the mark does not clear it; one after does.
	before := time.Now().Add(-time.Hour)
	h.record(cl, []ProbeResult{{Cluster: "tools", Image: "r/shell:p", OK: true, At: before}})
	if !h.Unavailable(cl, "r/shell:p") {
		t.Error("an older probe cleared the mark")
	}
	h.record(cl, []ProbeResult{
		{Cluster: "tools", Image: "r/shell:p", OK: true, At: time.Now()},
		{Cluster: "tools", Image: "r/shell@sha256:01", OK: true, At: time.Now()},
		{Cluster: "tools", Image: "r/shell@sha256:00", OK: true, At: time.Now()},
	})
	if got := h.Order(cl); !slices.Equal(got, []string{"r/shell:p", "r/shell@sha256:01", "r/shell@sha256:00"}) {
		t.Errorf("order after pre-flight found all working %q", got)
	}
	if err := h.Ready(t.Context()); err != nil {
		t.Errorf("ready: %v", err)
	}

	// Readiness: a working fallback keeps it, no working image at all fails
	// it, an unreachable cluster does not.
	now := time.Now()
	h.record(cl, []ProbeResult{
		{Cluster: "tools", Image: "r/shell:p", Reason: "ErrImagePull", At: now},
		{Cluster: "tools", Image: "r/shell@sha256:01", OK: true, At: now},
		{Cluster: "tools", Image: "r/shell@sha256:00", Reason: "ErrImagePull", At: now},
	})
	if err := h.Ready(t.Context()); err != nil {
		t.Errorf("ready with a working fallback: %v", err)
	}
	h.record(cl, []ProbeResult{{Cluster: "tools", Image: "r/shell@sha256:01", Reason: "ErrImageNeverPull", At: now}})
	if err := h.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), "no shell image starts in any cluster: tools (r/shell:p: ErrImagePull, r/shell@sha256:01: ErrImageNeverPull") {
		t.Errorf("not ready: %v", err)
	}
	h.record(cl, []ProbeResult{{Cluster: "tools", Image: "r/shell@sha256:00", Reason: ReasonClusterUnavailable, At: now}})
	if err := h.Ready(t.Context()); err != nil {
		t.Errorf("cluster down counts against readiness: %v", err)
	}
}

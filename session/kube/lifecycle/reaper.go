package lifecycle

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// sweep looks at every shell pod of every cluster each interval, until ctx
// ends, and deletes those nobody uses any more.
func (t *Tracker) sweep(ctx context.Context) {
	pods.Every(ctx, t.cfg.SweepInterval, func(ctx context.Context) {
		for _, cl := range t.cfg.Clusters {
			t.sweepCluster(ctx, cl)
		}
	})
}

func (t *Tracker) sweepCluster(ctx context.Context, cl *pods.Cluster) {
	c, err := cl.Current()
	if err != nil {
		t.cfg.Log.Warn("sweep: no client", "project", cl.Name(), "err", err)
		return
	}
	list, err := c.List(ctx, "", pods.ShellPodsOf(cl.Name()))
	if err != nil {
		t.cfg.Log.Warn("sweep: list shell pods", "project", cl.Name(), "err", err)
		return
	}
	now := time.Now()
	for i := range list {
		pod := &list[i]
		why := t.reapReason(cl.Name(), pod, now)
		if why == "" {
			continue
		}
		err := c.Delete(ctx, pod, pods.IfUnchanged)
		switch {
		case apierrors.IsConflict(err):
			// Someone started a session since the list: keep it.
		case err != nil:
			t.cfg.Log.Warn("sweep: delete", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		default:
			t.cfg.Log.Info("deleted shell pod", "pod", pod.Namespace+"/"+pod.Name, "reason", why)
			ops.PodsReaped.WithLabelValues(cl.Name()).Inc()
			t.cfg.Audit.Emit(audit.Event{Type: audit.PodReaped, Cluster: cl.Name(), Namespace: pod.Namespace, Pod: pod.Name,
				Account: pod.Annotations[pods.AnnoAccount], Reason: why})
		}
	}
}

// reapReason says why pod should go, or "" to keep it.
func (t *Tracker) reapReason(project string, pod *corev1.Pod, now time.Time) string {
	if pod.DeletionTimestamp != nil || t.sessions(project, pod) > 0 {
		return ""
	}
	return idleVerdict(pod, t.cfg.Replica, now, t.cfg.IdleTimeout, t.StaleAfter(), t.cfg.StartTimeout)
}

// idleVerdict decides from the pod alone. A pod is in use while a
// replica other than self has a fresh entry with sessions; self's entry
// is ignored (the caller knows better). A pod is reaped when it has
// ended, when it never became ready and is older than twice the start
// timeout (left by a bastion that died while starting it), or when its
// last activity (the newest entry, or its creation) is older than idle.
func idleVerdict(pod *corev1.Pod, self string, now time.Time, idle, stale, start time.Duration) string {
	last := pod.CreationTimestamp.Time
	for replica, e := range entries(pod) {
		at := time.Unix(e.T, 0)
		if replica != self && e.N > 0 && now.Sub(at) < stale {
			return ""
		}
		if at.After(last) {
			last = at
		}
	}
	switch {
	case pods.Finished(pod):
		return "ended (" + string(pod.Status.Phase) + ")"
	case !pods.Ready(pod) && now.Sub(pod.CreationTimestamp.Time) > 2*start:
		return "never became ready"
	case now.Sub(last) >= idle:
		return "idle for " + now.Sub(last).Round(time.Second).String()
	}
	return ""
}

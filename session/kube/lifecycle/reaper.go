package lifecycle

import (
	"context"
	"log/slog"
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
	kept := 0
	for i := range list {
		pod := &list[i]
		why, idleSince := t.reapReason(cl.Name(), pod, now)
		if why == "" {
			continue
		}
		if !idleSince.IsZero() {
			var keep bool
			pod, why, keep = t.detachedWork(ctx, c, pod, why, idleSince, now)
			if keep {
				kept++
				continue
			}
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
	ops.PodsKeptDetached.WithLabelValues(cl.Name()).Set(float64(kept))
}

// detachedWork decides whether pod, idle since idleSince (why), is kept
// for the account's detached processes (see the package comment). It
// returns the pod to delete (patched with the scan's result when it is
// kept) and the reason to delete it.
func (t *Tracker) detachedWork(ctx context.Context, c *pods.Client, pod *corev1.Pod, why string, idleSince, now time.Time) (*corev1.Pod, string, bool) {
	name := pod.Namespace + "/" + pod.Name
	switch detachedVerdict(pod, idleSince, now, t.cfg.DetachedMaxAge, t.DetachedRecheck()) {
	case reapIt:
		return pod, why, false
	case tooOldIt:
		return pod, why + ", past kube.detached_max_age (" + t.cfg.DetachedMaxAge.String() + ")", false
	case keepIt:
		return pod, why, true
	}
	sctx, cancel := context.WithTimeout(ctx, detachedScanTimeout)
	defer cancel()
	d, err := ScanDetached(sctx, c, pod)
	if err != nil {
		// Keep it for now: a user's work is not thrown away on an API
		// hiccup, and detached_max_age still bounds how long.
		t.cfg.Log.Warn("sweep: could not look for detached processes; keeping the pod until the next sweep", "pod", name, "err", err)
		return pod, why, true
	}
	if d.N() == 0 {
		return pod, why, false
	}
	patch, err := detachedPatch(d.N(), now)
	if err == nil {
		var patched *corev1.Pod
		if patched, err = c.Patch(ctx, pod.Namespace, pod.Name, patch); err == nil {
			pod = patched
		}
	}
	if err != nil {
		t.cfg.Log.Warn("sweep: record detached processes", "pod", name, "err", err)
	}
	level := slog.LevelDebug
	if _, seen := pod.Annotations[AnnoDetached]; !seen || err != nil {
		level = slog.LevelInfo
	}
	t.cfg.Log.Log(ctx, level, "keeping an idle shell pod for its detached processes", "pod", name, "idle", now.Sub(idleSince).Round(time.Second),
		"processes", d.N(), "names", d.Names(), "until", idleSince.Add(t.cfg.DetachedMaxAge).UTC().Format(time.RFC3339))
	return pod, why, true
}

// detachedScanTimeout bounds one scan.
const detachedScanTimeout = 20 * time.Second

// DetachedRecheck is how long a scan that found detached processes keeps
// a pod before it is scanned again: five sweep intervals.
func (t *Tracker) DetachedRecheck() time.Duration { return 5 * t.cfg.SweepInterval }

// reapReason says why pod should go, or "" to keep it; when the reason
// is idleness, idleSince is the last activity.
func (t *Tracker) reapReason(project string, pod *corev1.Pod, now time.Time) (why string, idleSince time.Time) {
	if pod.DeletionTimestamp != nil || t.sessions(project, pod) > 0 {
		return "", time.Time{}
	}
	return idleVerdict(pod, t.cfg.Replica, now, t.cfg.IdleTimeout, t.StaleAfter(), t.cfg.StartTimeout)
}

// idleVerdict decides from the pod alone. A pod is in use while a
// replica other than self has a fresh entry with sessions; self's entry
// is ignored (the caller knows better). A pod is reaped when it has
// ended, when it never became ready and is older than twice the start
// timeout (left by a bastion that died while starting it), or when its
// last activity (the newest entry, or its creation) is older than idle;
// then idleSince is that last activity.
func idleVerdict(pod *corev1.Pod, self string, now time.Time, idle, stale, start time.Duration) (why string, idleSince time.Time) {
	last := pod.CreationTimestamp.Time
	for replica, e := range entries(pod) {
		at := time.Unix(e.T, 0)
		if replica != self && e.N > 0 && now.Sub(at) < stale {
			return "", time.Time{}
		}
		if at.After(last) {
			last = at
		}
	}
	switch {
	case pods.Finished(pod):
		return "ended (" + string(pod.Status.Phase) + ")", time.Time{}
	case !pods.Ready(pod) && now.Sub(pod.CreationTimestamp.Time) > 2*start:
		return "never became ready", time.Time{}
	case now.Sub(last) >= idle:
		return "idle for " + now.Sub(last).Round(time.Second).String(), last
	}
	return "", time.Time{}
}

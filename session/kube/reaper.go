package kube

import (
	"context"
	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/ops"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// sweep looks at every shell pod of every cluster each interval, until ctx
// ends, and deletes those nobody uses any more.
func (b *Backend) sweep(ctx context.Context) {
	tick := time.NewTicker(b.cfg.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, cl := range b.order {
			b.sweepCluster(ctx, cl)
		}
	}
}

// SweepNow runs one sweep of every cluster (tests and benchmarks).
func (b *Backend) SweepNow(ctx context.Context) {
	for _, cl := range b.order {
		b.sweepCluster(ctx, cl)
	}
}

func (b *Backend) sweepCluster(ctx context.Context, cl *cluster) {
	cs, _, err := cl.clients()
	if err != nil {
		b.log.Warn("sweep: no client", "project", cl.cfg.Name, "err", err)
		return
	}
	lctx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
	pods, err := cs.cs.CoreV1().Pods("").List(lctx, metav1.ListOptions{
		LabelSelector: shellSelector + "," + labelProject + "=" + cl.cfg.Name,
	})
	cancel()
	if err != nil {
		b.log.Warn("sweep: list shell pods", "project", cl.cfg.Name, "err", err)
		return
	}
	now := time.Now()
	for i := range pods.Items {
		pod := &pods.Items[i]
		why := b.reapReason(cl, pod, now)
		if why == "" {
			continue
		}
		err := b.deletePod(ctx, cs, pod, why)
		switch {
		case apierrors.IsConflict(err):
			// Someone started a session since the list: keep it.
		case err != nil:
			b.log.Warn("sweep: delete", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		default:
			ops.PodsReaped.WithLabelValues(cl.cfg.Name).Inc()
			b.audit.Emit(audit.Event{Type: audit.PodReaped, Cluster: cl.cfg.Name, Namespace: pod.Namespace, Pod: pod.Name,
				Account: pod.Annotations[annoAccount], Reason: why})
		}
	}
}

// reapReason says why pod should go, or "" to keep it.
func (b *Backend) reapReason(cl *cluster, pod *corev1.Pod, now time.Time) string {
	if pod.DeletionTimestamp != nil {
		return ""
	}
	b.mu.Lock()
	t := b.tracked[trackKey(cl, pod.Namespace, pod.Name)]
	mine := t != nil && t.n > 0
	b.mu.Unlock()
	if mine {
		return ""
	}
	return idleVerdict(pod, b.replica, now, b.cfg.IdleTimeout, b.staleAfter(), b.cfg.StartTimeout)
}

// idleVerdict decides from the pod alone (see heartbeat.go). A pod is in
// use while a replica other than self has a fresh entry with sessions;
// self's entry is ignored (the caller knows better). A pod is reaped when
// it has ended, when it never became ready and is older than twice the
// start timeout (left by a bastion that died while starting it), or when
// its last activity (the newest entry, or its creation) is older than
// idle.
func idleVerdict(pod *corev1.Pod, self string, now time.Time, idle, stale, start time.Duration) string {
	last := pod.CreationTimestamp.Time
	for replica, e := range sessionEntries(pod) {
		at := time.Unix(e.T, 0)
		if replica != self && e.N > 0 && now.Sub(at) < stale {
			return ""
		}
		if at.After(last) {
			last = at
		}
	}
	switch {
	case podFinished(pod):
		return "ended (" + string(pod.Status.Phase) + ")"
	case !podReady(pod) && now.Sub(pod.CreationTimestamp.Time) > 2*start:
		return "never became ready"
	case now.Sub(last) >= idle:
		return "idle for " + now.Sub(last).Round(time.Second).String()
	}
	return ""
}

func (b *Backend) staleAfter() time.Duration { return 3 * b.cfg.HeartbeatInterval }

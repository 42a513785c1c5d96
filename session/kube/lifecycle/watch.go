package lifecycle

import (
	"context"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// Watch returns the instance record of pod, which u's sessions use,
// starting a watch that notices the pod being deleted or evicted, unless
// one runs already. The watch ends when the pod goes, or when u's last
// session ends.
func (t *Tracker) Watch(u *Use, c *pods.Client, pod *corev1.Pod) *Instance {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u.inst != nil && u.inst.uid == pod.UID {
		return u.inst
	}
	if u.inst != nil {
		u.inst.stop()
	}
	ctx, stop := context.WithCancel(t.ctx)
	inst := &Instance{uid: pod.UID, gone: make(chan struct{}), stop: stop}
	u.inst = inst
	t.wg.Go(func() {
		defer stop()
		t.watch(ctx, c, pod, inst)
	})
	return inst
}

func (t *Tracker) watch(ctx context.Context, c *pods.Client, pod *corev1.Pod, inst *Instance) {
	check := func(p *corev1.Pod) bool {
		switch {
		case p.UID != inst.uid:
			inst.reason = "was deleted"
		case p.Status.Reason == "Evicted":
			inst.reason = "was evicted (" + strings.TrimSuffix(p.Status.Message, ".") + ")"
		case p.DeletionTimestamp != nil:
			inst.reason = "was deleted"
		case pods.Finished(p):
			inst.reason = "stopped (" + string(p.Status.Phase) + ")"
		}
		return inst.reason != ""
	}
	rv := pod.ResourceVersion
	for {
		err := c.Watch(ctx, pod.Namespace, pod.Name, rv, func(ev watch.Event) (bool, error) {
			if ev.Type == watch.Deleted {
				inst.reason = "was deleted"
				return true, nil
			}
			p, ok := ev.Object.(*corev1.Pod)
			return ok && check(p), nil
		})
		if inst.reason != "" || ctx.Err() != nil {
			break
		}
		// The watch broke off (say, its resourceVersion expired while the
		// API server restarted): look at the pod again and go on.
		t.cfg.Log.Debug("watch on a shell pod ended; resuming", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		if ctx.Err() != nil {
			break
		}
		p, gerr := c.Get(ctx, pod.Namespace, pod.Name)
		if apierrors.IsNotFound(gerr) {
			inst.reason = "was deleted"
			break
		}
		if gerr == nil {
			if check(p) {
				break
			}
			rv = p.ResourceVersion
		}
	}
	if inst.reason != "" {
		t.cfg.Log.Info("shell pod went away under its sessions", "pod", pod.Namespace+"/"+pod.Name, "reason", inst.reason)
		close(inst.gone)
	}
}

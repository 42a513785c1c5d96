package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
	"github.com/bastion-ssh/bastion/session/kube/lifecycle"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/bastion-ssh/bastion/session"
)

// acquire returns the account's ready pod, with the session counted (and
// published) on it, creating the pod if there is none. A pod whose image
// cannot be pulled is replaced by one from the next image (fallback.go),
// and note tells the user. On error the session is not counted.
func (b *Backend) acquire(ctx context.Context, c *pods.Client, id identity, ns string, prog *progress, note func(string)) (*corev1.Pod, *lifecycle.Use, *lifecycle.Instance, error) {
	cl := c.Cluster()
	name := podName(cl.Name(), id.acct.Name)
	u := b.pods.Track(cl, ns, name)
	ok := false
	defer func() {
		if !ok {
			b.pods.Untrack(u)
		}
	}()
	fb := b.newFallback(cl, id, ns, note)
	want := fb.want()
	for attempt := 0; ; attempt++ {
		created := false // by this session, in this attempt
		if attempt == 5+len(fb.tried) {
			return nil, nil, nil, fmt.Errorf("pod %s/%s: still changing after %d attempts", ns, name, attempt)
		}
		pod, err := b.pods.Publish(ctx, u)
		if apierrors.IsNotFound(err) {
			pod, err = b.create(ctx, c, u, want, prog)
			if apierrors.IsAlreadyExists(err) {
				continue // another session or replica made it first: share it
			}
			created = err == nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, nil, context.Cause(ctx)
			}
			return nil, nil, nil, pods.UserError(cl.Name(), fmt.Sprintf("pod %s/%s", ns, name), err)
		}
		if err := checkOwner(pod, id); err != nil {
			return nil, nil, nil, err
		}
		if pod.DeletionTimestamp != nil || pods.Finished(pod) || b.outdated(cl, pod, want) {
			if err := b.replace(ctx, c, pod, prog); err != nil {
				return nil, nil, nil, err
			}
			continue
		}
		if !pods.Ready(pod) {
			image := pods.Image(pod)
			fb.waited = true
			pod, err = b.waitReady(ctx, c, pod, prog, created)
			if err != nil {
				if fb.next(image, err) {
					want = fb.want()
					continue
				}
				return nil, nil, nil, fb.failure(err)
			}
		}
		fb.ready(pod)
		inst := b.pods.Watch(u, c, pod)
		ok = true
		return pod, u, inst, nil
	}
}

// checkOwner makes sure pod is id's: the name is derived from the account,
// but a hash collision or a pod left from an account whose uid changed
// must never be entered.
func checkOwner(pod *corev1.Pod, id identity) error {
	if pod.Labels[pods.LabelManagedBy] != pods.ManagedBy || pod.Labels[pods.LabelComponent] != pods.ComponentShell ||
		pod.Annotations[pods.AnnoAccount] != id.acct.Name || pod.Annotations[pods.AnnoUID] != strconv.Itoa(id.acct.UID) {
		return fmt.Errorf("pod %s/%s belongs to account %q uid %s, not %q uid %d; refusing to use it",
			pod.Namespace, pod.Name, pod.Annotations[pods.AnnoAccount], pod.Annotations[pods.AnnoUID], id.acct.Name, id.acct.UID)
	}
	return nil
}

// outdated: the pod was made from another config (image, limits, ...)
// and no session anywhere uses it, so it is replaced now rather than at
// the next idle reaping.
func (b *Backend) outdated(cl *pods.Cluster, pod, want *corev1.Pod) bool {
	if pod.Annotations[pods.AnnoSpecHash] == want.Annotations[pods.AnnoSpecHash] || b.pods.InUse(cl.Name(), pod) {
		return false
	}
	b.log.Info("replacing a shell pod made from an older config", "pod", pod.Namespace+"/"+pod.Name)
	return true
}

// replace deletes pod (if it is not already going) and waits until it is
// gone.
func (b *Backend) replace(ctx context.Context, c *pods.Client, pod *corev1.Pod, prog *progress) error {
	prog.set("replacing your old shell")
	if pod.DeletionTimestamp == nil {
		err := c.Delete(ctx, pod, pods.IfUnchanged)
		if err != nil && !apierrors.IsConflict(err) {
			return pods.UserError(c.Project(), "delete pod", err)
		}
		if err == nil {
			b.log.Info("deleted shell pod", "pod", pod.Namespace+"/"+pod.Name, "reason", "replaced")
		}
	}
	wctx, cancel := context.WithTimeout(ctx, b.cfg.StartTimeout)
	defer cancel()
	err := c.WaitGone(wctx, pod)
	if err != nil && ctx.Err() == nil {
		return session.UserErrorf(err, fmt.Sprintf("your previous shell in %s is still shutting down; try again in a minute", c.Project()))
	}
	return err
}

// create makes the pod (and its namespace, if config says so), with this
// replica's session already counted in its annotation.
func (b *Backend) create(ctx context.Context, c *pods.Client, u *lifecycle.Use, want *corev1.Pod, prog *progress) (*corev1.Pod, error) {
	prog.set("creating your shell")
	pod := want.DeepCopy()
	b.pods.Annotate(pod, u)
	cl := c.Cluster()
	fresh := false // this session made the namespace
	if cl.Cfg.CreateNamespaces() {
		// Most pods are made at an account's first login, when its
		// namespace is not there yet: make it first (AlreadyExists
		// otherwise, one request) rather than learn that it is missing
		// from two failed requests. An error here shows again below,
		// where it matters.
		fresh, _ = c.CreateNamespace(ctx, pod.Namespace)
	}
	for attempt := 0; ; attempt++ {
		// The ServiceAccount must exist before a pod that names it.
		err := ensureCredentials(ctx, c, pod.Namespace, fresh)
		if err != nil && !apierrors.IsNotFound(err) && !pods.Unavailable(err) {
			return nil, session.UserErrorf(err, fmt.Sprintf("your shell in %s cannot be given its Kubernetes credentials; tell the operators", cl.Name()))
		}
		var created *corev1.Pod
		if err == nil {
			created, err = c.Create(ctx, pod)
		}
		switch {
		case err == nil:
			ops.PodsCreated.WithLabelValues(cl.Name()).Inc()
			b.log.Info("created shell pod", "pod", pod.Namespace+"/"+pod.Name, "image", pod.Spec.Containers[0].Image)
			b.audit.Emit(audit.Event{Type: audit.PodCreated, Cluster: cl.Name(), Namespace: pod.Namespace, Pod: pod.Name,
				Account: pod.Annotations[pods.AnnoAccount], Image: pod.Spec.Containers[0].Image})
			return created, nil
		case attempt < 2 && apierrors.IsNotFound(err):
			// The namespace is missing.
			if !cl.Cfg.CreateNamespaces() {
				return nil, session.UserErrorf(err, fmt.Sprintf("there is no namespace %s for you in project %s; ask the operators to create it", pod.Namespace, cl.Name()))
			}
			// No waiting for its default ServiceAccount: a pod with
			// credentials names bastion's own, made next; one without
			// waits below if the admission refuses it.
			created, err := c.CreateNamespace(ctx, pod.Namespace)
			if err != nil {
				return nil, err
			}
			fresh = created
		case attempt < 2 && apierrors.IsForbidden(err) && strings.Contains(err.Error(), "serviceaccount"):
			// A namespace made moments ago has no default ServiceAccount
			// yet (a pod without credentials uses it).
			if err := c.WaitServiceAccount(ctx, pod.Namespace, b.cfg.StartTimeout); err != nil {
				return nil, pods.APIError(cl.Name(), "wait for the default ServiceAccount", err)
			}
		default:
			return nil, err
		}
	}
}

// waitReady watches pod until it is ready, showing progress; a pod that
// can never start, or does not within the start timeout, is deleted. The
// session that created the pod (created) times its start: the other
// sessions waiting for the same pod do not count it again.
func (b *Backend) waitReady(ctx context.Context, c *pods.Client, pod *corev1.Pod, prog *progress, created bool) (*corev1.Pod, error) {
	project := c.Project()
	start := time.Now()
	if !pod.CreationTimestamp.IsZero() && time.Since(pod.CreationTimestamp.Time) < b.cfg.StartTimeout {
		// Another session started it: its timeout runs from creation.
		start = pod.CreationTimestamp.Time
	}
	wctx, cancel := context.WithDeadlineCause(ctx, start.Add(b.cfg.StartTimeout), errStartTimeout)
	defer cancel()
	cur := pod
	check := func(p *corev1.Pod) (bool, error) {
		cur = p
		if pods.Ready(p) {
			return true, nil
		}
		if reason, msg := startProblem(project, p); reason != "" {
			return false, &startError{reason: reason, msg: msg}
		}
		prog.set(phaseText(p))
		return false, nil
	}
	done, err := check(pod)
	if !done && err == nil {
		err = c.WatchStart(wctx, pod.Namespace, pod.Name, pod.ResourceVersion, func(ev watch.Event) (bool, error) {
			if ev.Type == watch.Deleted {
				return false, session.UserErrorf(nil, fmt.Sprintf("your shell in %s was deleted while it was starting; try again", project))
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				return false, nil
			}
			return check(p)
		})
	}
	if err == nil {
		if created {
			// This session made the pod and waited for it to start.
			since := pod.CreationTimestamp.Time
			if since.IsZero() {
				since = start
			}
			ops.PodStartDuration.WithLabelValues(project).Observe(time.Since(since).Seconds())
		}
		prog.done()
		return cur, nil
	}
	var se *startError
	switch {
	case errors.As(err, &se):
		n := b.countStartFailure(project, se.reason)
		status, _ := json.Marshal(cur.Status)
		b.log.Error("shell pod cannot start; deleting it", "pod", cur.Namespace+"/"+cur.Name, "reason", se.reason,
			"image", cur.Spec.Containers[0].Image, "count", n, "status", string(status))
		b.deleteNow(ctx, c, cur, se.reason)
		prog.clear()
		return nil, session.UserErrorf(fmt.Errorf("pod %s/%s: %w", cur.Namespace, cur.Name, se), se.msg)
	case ctx.Err() == nil && errors.Is(context.Cause(wctx), errStartTimeout):
		n := b.countStartFailure(project, "StartTimeout")
		status, _ := json.Marshal(cur.Status)
		b.log.Error("shell pod did not start in time; deleting it", "pod", cur.Namespace+"/"+cur.Name,
			"timeout", b.cfg.StartTimeout, "count", n, "status", string(status))
		b.deleteNow(ctx, c, cur, "start timeout")
		prog.clear()
		return nil, session.UserErrorf(errStartTimeout, fmt.Sprintf("your shell in %s did not start within %s; try again, and tell the operators if it persists",
			project, b.cfg.StartTimeout.Round(time.Second)))
	}
	prog.clear()
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	return nil, pods.UserError(project, "wait for pod "+pod.Name, err)
}

var errStartTimeout = errors.New("start timeout")

type startError struct{ reason, msg string }

func (e *startError) Error() string { return e.reason }

// deleteNow deletes a pod that can never serve (whatever its version).
func (b *Backend) deleteNow(ctx context.Context, c *pods.Client, pod *corev1.Pod, why string) {
	if err := c.Delete(ctx, pod, pods.Now); err != nil {
		b.log.Error("cannot delete a shell pod that cannot start", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		return
	}
	b.log.Info("deleted shell pod", "pod", pod.Namespace+"/"+pod.Name, "reason", why)
}

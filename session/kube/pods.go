package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/ops"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/bastion-ssh/bastion/session"
)

// acquire returns the account's ready pod, with the session counted (and
// published) on it, creating the pod if there is none. A pod whose image
// cannot be pulled is replaced by one from the next image (fallback.go),
// and note tells the user. On error the session is not counted.
func (b *Backend) acquire(ctx context.Context, cl *cluster, cs *clients, id identity, ns string, prog *progress, note func(string)) (*corev1.Pod, *tracked, *instance, error) {
	name := podName(cl.cfg.Name, id.acct.Name)
	t := b.track(cl, ns, name)
	ok := false
	defer func() {
		if !ok {
			b.untrack(t)
		}
	}()
	fb := b.newFallback(cl, id, ns, note)
	want := fb.want()
	for attempt := 0; ; attempt++ {
		if attempt == 5+len(fb.tried) {
			return nil, nil, nil, fmt.Errorf("pod %s/%s: still changing after %d attempts", ns, name, attempt)
		}
		pctx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
		pod, err := b.publish(pctx, t)
		cancel()
		if apierrors.IsNotFound(err) {
			pod, err = b.create(ctx, cl, cs, t, want, prog)
			if apierrors.IsAlreadyExists(err) {
				continue // another session or replica made it first: share it
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, nil, context.Cause(ctx)
			}
			return nil, nil, nil, asUserError(cl, fmt.Sprintf("pod %s/%s", ns, name), err)
		}
		if err := checkOwner(pod, id); err != nil {
			return nil, nil, nil, err
		}
		if pod.DeletionTimestamp != nil || podFinished(pod) || b.outdated(pod, want) {
			if err := b.replace(ctx, cl, cs, pod, prog); err != nil {
				return nil, nil, nil, err
			}
			continue
		}
		if !podReady(pod) {
			image := podImage(pod)
			fb.waited = true
			pod, err = b.waitReady(ctx, cl, cs, pod, prog)
			if err != nil {
				if fb.next(image, err) {
					want = fb.want()
					continue
				}
				return nil, nil, nil, fb.failure(err)
			}
		}
		fb.ready(pod)
		inst := b.monitor(t, cs, pod)
		ok = true
		return pod, t, inst, nil
	}
}

// asUserError turns an API failure into what the user should read.
func asUserError(cl *cluster, what string, err error) error {
	if _, ok := session.UserMessage(err); ok {
		return err
	}
	return apiError(cl, what, err)
}

// checkOwner makes sure pod is id's: the name is derived from the account,
// but a hash collision or a pod left from an account whose uid changed
// must never be entered.
func checkOwner(pod *corev1.Pod, id identity) error {
	if pod.Labels[labelManagedBy] != managedBy || pod.Labels[labelComponent] != componentShell ||
		pod.Annotations[annoAccount] != id.acct.Name || pod.Annotations[annoUID] != strconv.Itoa(id.acct.UID) {
		return fmt.Errorf("pod %s/%s belongs to account %q uid %s, not %q uid %d; refusing to use it",
			pod.Namespace, pod.Name, pod.Annotations[annoAccount], pod.Annotations[annoUID], id.acct.Name, id.acct.UID)
	}
	return nil
}

// outdated: the pod was made from another config (image, limits, ...)
// and no session anywhere uses it, so it is replaced now rather than at
// the next idle reaping.
func (b *Backend) outdated(pod, want *corev1.Pod) bool {
	if pod.Annotations[annoSpecHash] == want.Annotations[annoSpecHash] {
		return false
	}
	now := time.Now()
	for replica, e := range sessionEntries(pod) {
		if replica == b.replica {
			b.mu.Lock()
			t := b.tracked[trackKey(b.clusterOfPod(pod), pod.Namespace, pod.Name)]
			mine := t != nil && t.n > 1
			b.mu.Unlock()
			if mine {
				return false
			}
			continue
		}
		if e.N > 0 && now.Sub(time.Unix(e.T, 0)) < b.staleAfter() {
			return false
		}
	}
	b.log.Info("replacing a shell pod made from an older config", "pod", pod.Namespace+"/"+pod.Name)
	return true
}

func (b *Backend) clusterOfPod(pod *corev1.Pod) *cluster { return b.clusters[pod.Labels[labelProject]] }

// replace deletes pod (if it is not already going) and waits until it is
// gone.
func (b *Backend) replace(ctx context.Context, cl *cluster, cs *clients, pod *corev1.Pod, prog *progress) error {
	prog.set("replacing your old shell")
	if pod.DeletionTimestamp == nil {
		if err := b.deletePod(ctx, cs, pod, "replaced"); err != nil && !apierrors.IsConflict(err) {
			return asUserError(cl, "delete pod", err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, b.cfg.StartTimeout)
	defer cancel()
	err := waitGone(wctx, cs, pod)
	if err != nil && ctx.Err() == nil {
		return session.UserErrorf(err, fmt.Sprintf("your previous shell in %s is still shutting down; try again in a minute", cl.cfg.Name))
	}
	return err
}

// deletePod deletes pod if it is still the incarnation and version we
// looked at (so that a session that started in between keeps it).
func (b *Backend) deletePod(ctx context.Context, cs *clients, pod *corev1.Pod, why string) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.APITimeout)
	defer cancel()
	uid, rv := pod.UID, pod.ResourceVersion
	err := cs.cs.CoreV1().Pods(pod.Namespace).Delete(dctx, pod.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv},
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete pod %s/%s (%s): %w", pod.Namespace, pod.Name, why, err)
	}
	b.log.Info("deleted shell pod", "pod", pod.Namespace+"/"+pod.Name, "reason", why)
	return nil
}

// create makes the pod (and its namespace, if config says so), with this
// replica's session already counted in its annotation.
func (b *Backend) create(ctx context.Context, cl *cluster, cs *clients, t *tracked, want *corev1.Pod, prog *progress) (*corev1.Pod, error) {
	prog.set("creating your shell")
	pod := want.DeepCopy()
	b.mu.Lock()
	pod.Annotations[sessionAnnotation(b.replica)] = sessionValue(t.n, time.Now())
	b.mu.Unlock()
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
		created, err := cs.cs.CoreV1().Pods(pod.Namespace).Create(cctx, pod, metav1.CreateOptions{FieldManager: "bastion"})
		cancel()
		switch {
		case err == nil:
			b.log.Info("created shell pod", "pod", pod.Namespace+"/"+pod.Name, "image", pod.Spec.Containers[0].Image)
			b.audit.Emit(audit.Event{Type: audit.PodCreated, Cluster: cl.cfg.Name, Namespace: pod.Namespace, Pod: pod.Name,
				Account: pod.Annotations[annoAccount], Image: pod.Spec.Containers[0].Image})
			return created, nil
		case attempt < 2 && apierrors.IsNotFound(err):
			// The namespace is missing.
			if !cl.cfg.CreateNamespaces() {
				return nil, session.UserErrorf(err, fmt.Sprintf("there is no namespace %s for you in project %s; ask the operators to create it", pod.Namespace, cl.cfg.Name))
			}
			if err := b.ensureNamespace(ctx, cl, cs, pod.Namespace); err != nil {
				return nil, err
			}
		case attempt < 2 && apierrors.IsForbidden(err) && strings.Contains(err.Error(), "serviceaccount"):
			// A namespace made moments ago has no default ServiceAccount yet.
			if err := waitServiceAccount(ctx, cs, pod.Namespace, b.cfg.StartTimeout); err != nil {
				return nil, apiError(cl, "wait for the default ServiceAccount", err)
			}
		default:
			return nil, err
		}
	}
}

func (b *Backend) ensureNamespace(ctx context.Context, cl *cluster, cs *clients, ns string) error {
	cctx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
	defer cancel()
	_, err := cs.cs.CoreV1().Namespaces().Create(cctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   ns,
		Labels: map[string]string{labelManagedBy: managedBy, labelProject: cl.cfg.Name},
	}}, metav1.CreateOptions{FieldManager: "bastion"})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return apiError(cl, "create namespace "+ns, err)
	}
	if err == nil {
		b.log.Info("created namespace", "namespace", ns, "project", cl.cfg.Name)
	}
	if err := waitServiceAccount(ctx, cs, ns, b.cfg.StartTimeout); err != nil {
		return apiError(cl, "wait for the default ServiceAccount of "+ns, err)
	}
	return nil
}

// waitServiceAccount watches until namespace ns has its default
// ServiceAccount (pods cannot be created before).
func waitServiceAccount(ctx context.Context, cs *clients, ns string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lw := cache.NewListWatchFromClient(cs.cs.CoreV1().RESTClient(), "serviceaccounts", ns, fields.OneTermEqualSelector("metadata.name", "default"))
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.ServiceAccount{}, func(store cache.Store) (bool, error) {
		_, exists, err := store.GetByKey(ns + "/default")
		return exists, err
	}, func(ev watch.Event) (bool, error) {
		return ev.Type == watch.Added || ev.Type == watch.Modified, nil
	})
	return err
}

func podReady(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podFinished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// watchPod watches one pod from resourceVersion rv until fn returns true or
// an error, or ctx ends. It reconnects across watch failures (a
// RetryWatcher) and never lists.
func watchPod(ctx context.Context, cs *clients, ns, name, rv string, fn func(watch.Event) (bool, error)) error {
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		return cs.cs.CoreV1().Pods(ns).Watch(ctx, o)
	}}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, rv, lw)
	if err != nil {
		return fmt.Errorf("watch pod %s/%s: %w", ns, name, err)
	}
	defer func() {
		w.Stop()
		<-w.Done()
	}()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("watch pod %s/%s: closed", ns, name)
			}
			if ev.Type == watch.Error {
				return fmt.Errorf("watch pod %s/%s: %v", ns, name, apierrors.FromObject(ev.Object))
			}
			if ev.Type == watch.Bookmark {
				continue
			}
			done, err := fn(ev)
			if err != nil || done {
				return err
			}
		}
	}
}

// waitGone watches until pod is deleted.
func waitGone(ctx context.Context, cs *clients, pod *corev1.Pod) error {
	return watchPod(ctx, cs, pod.Namespace, pod.Name, pod.ResourceVersion, func(ev watch.Event) (bool, error) {
		if ev.Type == watch.Deleted {
			return true, nil
		}
		p, ok := ev.Object.(*corev1.Pod)
		return ok && p.UID != pod.UID, nil // gone and already made anew
	})
}

// startProblem reports why pod can never start, if it cannot: the reason
// (for the log and the counters) and the line for the user.
func startProblem(project string, pod *corev1.Pod) (reason, msg string) {
	image := ""
	if len(pod.Spec.Containers) > 0 {
		image = pod.Spec.Containers[0].Image
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName":
				return w.Reason, fmt.Sprintf("the shell image %s is not available in %s; administrators have been alerted", image, project)
			case "CreateContainerConfigError", "CreateContainerError":
				return w.Reason, fmt.Sprintf("your shell in %s cannot be set up (%s); administrators have been alerted", project, w.Reason)
			case "CrashLoopBackOff", "RunContainerError":
				return w.Reason, fmt.Sprintf("your shell in %s fails as it starts; administrators have been alerted", project)
			}
		}
		if tm := cs.State.Terminated; tm != nil {
			return "Terminated", fmt.Sprintf("your shell in %s exited as it started (%s); administrators have been alerted", project, tm.Reason)
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return c.Reason, fmt.Sprintf("no node in %s has room for your shell right now; try again in a few minutes", project)
		}
	}
	if podFinished(pod) {
		return "Pod" + string(pod.Status.Phase), fmt.Sprintf("your shell in %s stopped as it started; administrators have been alerted", project)
	}
	return "", ""
}

// waitReady watches pod until it is ready, showing progress; a pod that
// can never start, or does not within the start timeout, is deleted.
func (b *Backend) waitReady(ctx context.Context, cl *cluster, cs *clients, pod *corev1.Pod, prog *progress) (*corev1.Pod, error) {
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
		if podReady(p) {
			return true, nil
		}
		if reason, msg := startProblem(cl.cfg.Name, p); reason != "" {
			return false, &startError{reason: reason, msg: msg}
		}
		prog.set(phaseText(p))
		return false, nil
	}
	done, err := check(pod)
	if !done && err == nil {
		err = watchPod(wctx, cs, pod.Namespace, pod.Name, pod.ResourceVersion, func(ev watch.Event) (bool, error) {
			if ev.Type == watch.Deleted {
				return false, session.UserErrorf(nil, fmt.Sprintf("your shell in %s was deleted while it was starting; try again", cl.cfg.Name))
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				return false, nil
			}
			return check(p)
		})
	}
	if err == nil {
		if !podReady(pod) {
			// This session waited for the pod to start.
			since := pod.CreationTimestamp.Time
			if since.IsZero() {
				since = start
			}
			ops.PodStartDuration.WithLabelValues(cl.cfg.Name).Observe(time.Since(since).Seconds())
		}
		prog.done()
		return cur, nil
	}
	var se *startError
	switch {
	case errors.As(err, &se):
		b.countStartFailure(cl, se.reason)
		status, _ := json.Marshal(cur.Status)
		b.log.Error("shell pod cannot start; deleting it", "pod", cur.Namespace+"/"+cur.Name, "reason", se.reason,
			"image", cur.Spec.Containers[0].Image, "count", b.startFailures(se.reason), "status", string(status))
		_ = b.deletePodNow(ctx, cs, cur, se.reason)
		prog.clear()
		return nil, session.UserErrorf(fmt.Errorf("pod %s/%s: %w", cur.Namespace, cur.Name, se), se.msg)
	case ctx.Err() == nil && errors.Is(context.Cause(wctx), errStartTimeout):
		b.countStartFailure(cl, "StartTimeout")
		status, _ := json.Marshal(cur.Status)
		b.log.Error("shell pod did not start in time; deleting it", "pod", cur.Namespace+"/"+cur.Name,
			"timeout", b.cfg.StartTimeout, "count", b.startFailures("StartTimeout"), "status", string(status))
		_ = b.deletePodNow(ctx, cs, cur, "start timeout")
		prog.clear()
		return nil, session.UserErrorf(errStartTimeout, fmt.Sprintf("your shell in %s did not start within %s; try again, and tell the operators if it persists",
			cl.cfg.Name, b.cfg.StartTimeout.Round(time.Second)))
	}
	prog.clear()
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	return nil, asUserError(cl, "wait for pod "+pod.Name, err)
}

var errStartTimeout = errors.New("start timeout")

type startError struct{ reason, msg string }

func (e *startError) Error() string { return e.reason }

// deletePodNow deletes a pod that can never serve (whatever its version).
func (b *Backend) deletePodNow(ctx context.Context, cs *clients, pod *corev1.Pod, why string) error {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.APITimeout)
	defer cancel()
	uid := pod.UID
	grace := int64(0)
	err := cs.cs.CoreV1().Pods(pod.Namespace).Delete(dctx, pod.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid}, GracePeriodSeconds: &grace,
	})
	if err != nil && !apierrors.IsNotFound(err) {
		b.log.Error("cannot delete a shell pod that cannot start", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		return err
	}
	b.log.Info("deleted shell pod", "pod", pod.Namespace+"/"+pod.Name, "reason", why)
	return nil
}

func phaseText(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			return "waiting for a node"
		}
	}
	if p.Spec.NodeName == "" {
		return "waiting for a node"
	}
	return "pulling the image and starting"
}

// monitor returns the instance record of pod, starting a watch that
// notices the pod being deleted or evicted, unless one runs already.
func (b *Backend) monitor(t *tracked, cs *clients, pod *corev1.Pod) *instance {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t.inst != nil && t.inst.uid == pod.UID {
		return t.inst
	}
	if t.inst != nil {
		t.inst.stop()
	}
	ctx, stop := context.WithCancel(b.ctx)
	inst := &instance{uid: pod.UID, gone: make(chan struct{}), stop: stop}
	t.inst = inst
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer stop()
		check := func(p *corev1.Pod) bool {
			switch {
			case p.UID != inst.uid:
				inst.reason = "was deleted"
			case p.Status.Reason == "Evicted":
				inst.reason = "was evicted (" + strings.TrimSuffix(p.Status.Message, ".") + ")"
			case p.DeletionTimestamp != nil:
				inst.reason = "was deleted"
			case podFinished(p):
				inst.reason = "stopped (" + string(p.Status.Phase) + ")"
			}
			return inst.reason != ""
		}
		rv := pod.ResourceVersion
		for {
			err := watchPod(ctx, cs, pod.Namespace, pod.Name, rv, func(ev watch.Event) (bool, error) {
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
			b.log.Debug("watch on a shell pod ended; resuming", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			if ctx.Err() != nil {
				break
			}
			gctx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
			p, gerr := cs.cs.CoreV1().Pods(pod.Namespace).Get(gctx, pod.Name, metav1.GetOptions{})
			cancel()
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
			b.log.Info("shell pod went away under its sessions", "pod", pod.Namespace+"/"+pod.Name, "reason", inst.reason)
			close(inst.gone)
		}
	}()
	return inst
}

// progress is the start-up line of an interactive session: it is shown
// only when the pod is not ready at once, and rewritten in place.
type progress struct {
	w       io.Writer // nil: not interactive
	project string
	start   time.Time
	mu      sync.Mutex
	last    string
	shown   bool
}

func newProgress(w io.Writer, project string) *progress {
	return &progress{w: w, project: project, start: time.Now()}
}

func (p *progress) set(state string) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if state == p.last {
		return
	}
	p.last, p.shown = state, true
	_, _ = fmt.Fprintf(p.w, "\r\x1b[Kbastion: starting your shell in %s... %s", p.project, state)
}

func (p *progress) done() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		_, _ = fmt.Fprintf(p.w, "\r\x1b[Kbastion: your shell in %s is ready in %.1fs\r\n", p.project, time.Since(p.start).Seconds())
		p.shown = false
	}
}

func (p *progress) clear() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		_, _ = io.WriteString(p.w, "\r\x1b[K")
		p.shown = false
	}
}

package kube

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/ops"
)

// Pre-flight.
//
// For each cluster and each of its shell images (primary and fallbacks),
// a probe pod is made from the shell pod's spec (same image, security
// context, resources, scheduling) with a trivial command ("exit 0"),
// watched until its container has run or it cannot start, for at most
// kube.preflight.timeout, and deleted. A probe pod that is never
// scheduled is a failure when the timeout ends, with the scheduler's
// reason. The results set bastion_preflight_ok, are logged, mark the
// images that cannot be pulled as unavailable for new pods (fallback.go)
// and clear the mark once an image works again, and feed readiness.
//
// The loop runs pre-flight at start (in the background: a cluster that is
// down must not hold up start-up), on Recheck (a config reload), when a
// session finds an image unavailable, and every retry interval while a
// cluster has a failing image or could not be asked.

const (
	componentPreflight = "preflight"
	// probeAccount names the probe pods' account (the namespace template
	// when kube.preflight.namespace is empty); probeUID is its uid.
	probeAccount = "bastion-preflight"
	probeUID     = 65534
	probeCommand = "exit 0"
)

// Reasons of failed probes besides the pods' own waiting reasons.
const (
	ReasonClusterUnavailable = "ClusterUnavailable"
	ReasonNotScheduled       = "NotScheduled"
	ReasonTimeout            = "Timeout"
	ReasonExited             = "Exited"
	ReasonRefused            = "Refused" // the API refused the probe pod
)

// ProbeResult is one pre-flight probe: whether a cluster could start one
// of its shell images.
type ProbeResult struct {
	Cluster string `json:"cluster"`
	Image   string `json:"image"`
	OK      bool   `json:"ok"`
	// Reason is the pod's waiting reason (ErrImagePull, ErrImageNeverPull,
	// ...) or one of the Reason constants; Message says it for a person.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Digest is what the probe's container ran (from its imageID).
	Digest string        `json:"digest,omitempty"`
	Took   time.Duration `json:"took"`
	// At is when the probe started.
	At time.Time `json:"-"`
}

func (r ProbeResult) String() string {
	if r.OK {
		s := fmt.Sprintf("ok in %.1fs", r.Took.Seconds())
		if r.Digest != "" {
			s += " (" + r.Digest + ")"
		}
		return s
	}
	return "FAILED: " + r.Reason + ": " + r.Message
}

// CheckImages runs a probe for every shell image of every cluster, the
// clusters and images at once, and returns the results in config order.
// It records nothing (see StartImageChecks): bastion check-config
// --preflight uses it as it is.
func (b *Backend) CheckImages(ctx context.Context) []ProbeResult {
	per := make([][]ProbeResult, len(b.order))
	var wg sync.WaitGroup
	for i, cl := range b.order {
		wg.Go(func() { per[i] = b.checkCluster(ctx, cl) })
	}
	wg.Wait()
	var out []ProbeResult
	for _, r := range per {
		out = append(out, r...)
	}
	return out
}

// checkCluster probes each of cl's images at once.
func (b *Backend) checkCluster(ctx context.Context, cl *cluster) []ProbeResult {
	images := b.imagesOf(cl)
	start := time.Now()
	all := func(reason, msg string) []ProbeResult {
		out := make([]ProbeResult, len(images))
		for i, img := range images {
			out[i] = ProbeResult{Cluster: cl.cfg.Name, Image: img, Reason: reason, Message: msg, At: start, Took: time.Since(start)}
		}
		return out
	}
	cs, err := b.clientsFor(cl)
	if err != nil {
		return all(ReasonClusterUnavailable, "the cluster cannot be reached: "+err.Error())
	}
	ns := b.preflightNamespace(cl)
	if cl.cfg.CreateNamespaces() {
		if err := b.ensureNamespace(ctx, cl, cs, ns); err != nil {
			if unavailable(err) {
				return all(ReasonClusterUnavailable, "the cluster's API server is unavailable: "+err.Error())
			}
			return all(ReasonRefused, err.Error())
		}
	}
	out := make([]ProbeResult, len(images))
	var wg sync.WaitGroup
	for i, img := range images {
		wg.Go(func() { out[i] = b.probe(ctx, cl, cs, ns, img) })
	}
	wg.Wait()
	if !slices.ContainsFunc(out, func(r ProbeResult) bool { return r.Reason == ReasonClusterUnavailable }) {
		b.sweepProbes(ctx, cl, cs, ns)
	}
	return out
}

// preflightNamespace is where cl's probe pods run.
func (b *Backend) preflightNamespace(cl *cluster) string {
	if t := b.cfg.Preflight.Namespace; t != "" {
		return strings.ReplaceAll(t, "{project}", cl.cfg.Name)
	}
	return expandNamespace(cl.cfg.UserNamespace(), cl.cfg.Name, probeAccount)
}

// probePod is cl's shell pod spec turned into a probe of image.
func probePod(cl *cluster, ns, image string, timeout time.Duration) *corev1.Pod {
	id := identity{acct: auth.Account{Name: probeAccount, UID: probeUID, GID: probeUID, Shell: "/bin/sh"}, short: probeAccount, project: cl.cfg.Name}
	pod := podSpec(cl, id, ns)
	pod.Name, pod.GenerateName = "", probeAccount+"-"
	for _, k := range []string{labelAccount, labelAccountHash} {
		delete(pod.Labels, k)
	}
	pod.Labels[labelComponent] = componentPreflight
	delete(pod.Annotations, annoSpecHash)
	c := &pod.Spec.Containers[0]
	c.Image = image
	c.Command = []string{"/bin/sh", "-c", probeCommand}
	c.WorkingDir = ""
	// The kubelet ends a probe left behind by a bastion that died.
	deadline := int64(math.Ceil(timeout.Seconds())) + 30
	pod.Spec.ActiveDeadlineSeconds = &deadline
	grace := int64(1)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	return pod
}

// probe runs one probe pod of image in namespace ns.
func (b *Backend) probe(ctx context.Context, cl *cluster, cs *clients, ns, image string) ProbeResult {
	timeout := b.cfg.Preflight.Timeout
	res := ProbeResult{Cluster: cl.cfg.Name, Image: image, At: time.Now()}
	finish := func(ok bool, reason, msg string) ProbeResult {
		res.OK, res.Reason, res.Message, res.Took = ok, reason, msg, time.Since(res.At)
		return res
	}
	cctx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
	created, err := cs.cs.CoreV1().Pods(ns).Create(cctx, probePod(cl, ns, image, timeout), metav1.CreateOptions{FieldManager: "bastion"})
	cancel()
	switch {
	case err != nil && unavailable(err):
		return finish(false, ReasonClusterUnavailable, "the cluster's API server is unavailable: "+err.Error())
	case apierrors.IsNotFound(err):
		return finish(false, ReasonRefused, fmt.Sprintf("namespace %s does not exist: create it, or set kube.preflight.namespace", ns))
	case err != nil:
		return finish(false, ReasonRefused, "the API server refused the probe pod: "+err.Error())
	}
	defer b.deleteProbe(ctx, cs, created)

	wctx, cancel := context.WithTimeoutCause(ctx, timeout, errProbeTimeout)
	defer cancel()
	last := created
	var verdict *ProbeResult
	err = watchPod(wctx, cs, ns, created.Name, created.ResourceVersion, func(ev watch.Event) (bool, error) {
		if ev.Type == watch.Deleted {
			return false, errors.New("the probe pod was deleted by someone else")
		}
		p, ok := ev.Object.(*corev1.Pod)
		if !ok {
			return false, nil
		}
		last = p
		done, ok, reason, msg := probeVerdict(p)
		if done {
			r := finish(ok, reason, msg)
			r.Digest = probeDigest(p)
			verdict = &r
		}
		return done, nil
	})
	switch {
	case verdict != nil:
		return *verdict
	case errors.Is(context.Cause(wctx), errProbeTimeout) && ctx.Err() == nil:
		reason, msg := probeTimeout(last, timeout)
		return finish(false, reason, msg)
	case ctx.Err() != nil:
		return finish(false, ReasonTimeout, "pre-flight was stopped: "+context.Cause(ctx).Error())
	case unavailable(err):
		return finish(false, ReasonClusterUnavailable, "the cluster's API server is unavailable: "+err.Error())
	default:
		return finish(false, ReasonRefused, fmt.Sprintf("watch the probe pod: %v", err))
	}
}

var errProbeTimeout = errors.New("pre-flight timeout")

// probeVerdict says whether probe pod p is done, and if so whether the
// image worked and, if not, why.
func probeVerdict(p *corev1.Pod) (done, ok bool, reason, msg string) {
	for _, st := range p.Status.ContainerStatuses {
		if st.State.Running != nil {
			return true, true, "", ""
		}
		if t := st.State.Terminated; t != nil {
			if t.ExitCode == 0 {
				return true, true, "", ""
			}
			return true, false, ReasonExited, fmt.Sprintf("the probe command (%s) exited with code %d (%s)", probeCommand, t.ExitCode, t.Reason)
		}
		if w := st.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
				"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff":
				m := w.Message
				if m == "" {
					m = "the container cannot start"
				}
				return true, false, w.Reason, m
			}
		}
	}
	switch p.Status.Phase {
	case corev1.PodSucceeded:
		return true, true, "", ""
	case corev1.PodFailed:
		return true, false, "Pod" + string(p.Status.Phase), fmt.Sprintf("the probe pod failed: %s %s", p.Status.Reason, p.Status.Message)
	}
	return false, false, "", ""
}

// probeTimeout is why probe pod p (as last seen) did not start in time.
func probeTimeout(p *corev1.Pod, timeout time.Duration) (string, string) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			reason := ReasonNotScheduled
			if c.Reason == corev1.PodReasonUnschedulable {
				reason = c.Reason
			}
			return reason, fmt.Sprintf("the probe pod was not scheduled within %s: %s", timeout, strings.TrimSpace(c.Message))
		}
	}
	if p.Spec.NodeName == "" {
		return ReasonNotScheduled, fmt.Sprintf("the probe pod was not scheduled within %s", timeout)
	}
	why := "still starting"
	for _, st := range p.Status.ContainerStatuses {
		if w := st.State.Waiting; w != nil && w.Reason != "" {
			why = strings.TrimSpace(w.Reason + " " + w.Message)
		}
	}
	return ReasonTimeout, fmt.Sprintf("the probe pod did not start within %s on node %s (%s)", timeout, p.Spec.NodeName, why)
}

func probeDigest(p *corev1.Pod) string {
	for _, st := range p.Status.ContainerStatuses {
		if d := digestOf(st.ImageID); d != "" {
			return d
		}
	}
	return ""
}

// deleteProbe deletes a probe pod at once, even when ctx has ended.
func (b *Backend) deleteProbe(ctx context.Context, cs *clients, pod *corev1.Pod) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.APITimeout)
	defer cancel()
	zero := int64(0)
	uid := pod.UID
	err := cs.cs.CoreV1().Pods(pod.Namespace).Delete(dctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) {
		b.log.Warn("pre-flight: cannot delete the probe pod; the next pre-flight will", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
}

// sweepProbes deletes probe pods of cl in ns left by a bastion that died
// while probing (older than a probe can live).
func (b *Backend) sweepProbes(ctx context.Context, cl *cluster, cs *clients, ns string) {
	lctx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
	defer cancel()
	list, err := cs.cs.CoreV1().Pods(ns).List(lctx, metav1.ListOptions{
		LabelSelector: labelManagedBy + "=" + managedBy + "," + labelComponent + "=" + componentPreflight + "," + labelProject + "=" + cl.cfg.Name,
	})
	if err != nil {
		return
	}
	old := 2 * (b.cfg.Preflight.Timeout + b.cfg.APITimeout)
	for i := range list.Items {
		if p := &list.Items[i]; time.Since(p.CreationTimestamp.Time) > old {
			b.deleteProbe(ctx, cs, p)
		}
	}
}

// StartImageChecks warns about fallback images given by tag, then runs
// the pre-flight loop and keeps the shell-image gauge up to date until
// the backend closes. Call it once, after Start.
func (b *Backend) StartImageChecks() {
	for _, w := range b.cfg.FallbackWarnings() {
		b.log.Warn("fallback shell image is not pinned by digest", "problem", w)
	}
	b.images.mu.Lock()
	b.images.running = true
	b.images.mu.Unlock()
	b.images.request("", "start")
	ctx := b.ctx
	b.wg.Go(func() { b.imageLoop(ctx) })
}

// Recheck runs pre-flight again for every cluster soon (a config
// reload); it does not wait.
func (b *Backend) Recheck(why string) { b.images.request("", why) }

func (b *Backend) imageLoop(ctx context.Context) {
	gauge := time.NewTicker(b.cfg.SweepInterval)
	defer gauge.Stop()
	var retry <-chan time.Time
	if d := b.cfg.Preflight.RetryInterval; d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		retry = t.C
	}
	b.images.mu.Lock()
	kick := b.images.kickLocked()
	b.images.mu.Unlock()
	for {
		if pending := b.images.takePending(); len(pending) > 0 {
			b.preflight(ctx, pending)
			b.updateImageGauge(ctx)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-gauge.C:
			b.updateImageGauge(ctx)
		case <-retry:
			for _, cl := range b.order {
				if b.needsRetry(cl) {
					b.images.request(cl.cfg.Name, "retry: an image failed or the cluster could not be asked")
				}
			}
		}
	}
}

// preflight runs and records the pre-flight of the pending clusters ("":
// all) at once.
func (b *Backend) preflight(ctx context.Context, pending map[string]string) {
	var wg sync.WaitGroup
	for _, cl := range b.order {
		why, ok := pending[cl.cfg.Name]
		if all, ok2 := pending[""]; ok2 {
			why, ok = all, true
		}
		if !ok {
			continue
		}
		wg.Go(func() {
			b.log.Debug("pre-flight", "project", cl.cfg.Name, "trigger", why)
			b.recordProbes(cl, b.checkCluster(ctx, cl))
		})
	}
	wg.Wait()
}

// recordProbes applies one cluster's results: the metric, the log, the
// unavailable marks.
func (b *Backend) recordProbes(cl *cluster, results []ProbeResult) {
	if len(results) == 0 {
		return
	}
	primary := b.imagesOf(cl)[0]
	b.images.mu.Lock()
	st := b.images.stateOf(cl.cfg.Name)
	var back []string
	for _, r := range results {
		st.probes[r.Image] = r
		mark, marked := st.bad[r.Image]
		switch {
		case r.OK && marked && r.At.After(mark.at):
			delete(st.bad, r.Image)
			back = append(back, r.Image)
		case !r.OK && slices.Contains(pullFailures, r.Reason):
			st.bad[r.Image] = badMark{at: r.At, reason: r.Reason}
		}
	}
	working := ""
	for _, r := range results {
		if r.OK {
			working = r.Image
			break
		}
	}
	b.images.mu.Unlock()

	for _, r := range results {
		v := 0.0
		if r.OK {
			v = 1
		}
		ops.PreflightOK.WithLabelValues(r.Cluster, r.Image).Set(v)
		role := "fallback"
		if r.Image == primary {
			role = "primary"
		}
		if r.OK {
			b.log.Info("pre-flight ok", "project", r.Cluster, "image", r.Image, "role", role,
				"took", r.Took.Round(time.Millisecond), "digest", r.Digest)
			continue
		}
		attrs := []any{"project", r.Cluster, "image", r.Image, "role", role, "reason", r.Reason, "message", r.Message,
			"took", r.Took.Round(time.Millisecond)}
		switch {
		case working != "" && working != r.Image:
			attrs = append(attrs, "new_pods_use", working)
		case working == "" && r.Reason != ReasonClusterUnavailable:
			attrs = append(attrs, "new_pods_use", "none: no image of this cluster starts")
		}
		b.log.Error("pre-flight failed", attrs...)
	}
	for _, img := range back {
		b.log.Info("shell image works again; new pods use it", "project", cl.cfg.Name, "image", img, "primary", img == primary)
	}
}

// needsRetry: cl has an image whose last probe failed, or was not probed.
func (b *Backend) needsRetry(cl *cluster) bool {
	b.images.mu.Lock()
	defer b.images.mu.Unlock()
	st := b.images.stateOf(cl.cfg.Name)
	for _, img := range b.imagesOf(cl) {
		if r, ok := st.probes[img]; !ok || !r.OK {
			return true
		}
	}
	return len(st.bad) > 0
}

// ImagesReady is the readiness check of the shell images: it fails only
// when no cluster can start any of its images (every image's last probe
// failed while the cluster answered). A failing primary with a working
// fallback, a cluster not checked yet and a cluster that is down (the
// backend's own check covers those) keep this replica ready.
func (b *Backend) ImagesReady(context.Context) error {
	b.images.mu.Lock()
	defer b.images.mu.Unlock()
	var problems []string
	for _, cl := range b.order {
		st := b.images.stateOf(cl.cfg.Name)
		var why []string
		serving := false
		for _, img := range b.imagesOf(cl) {
			r, ok := st.probes[img]
			if !ok || r.OK || r.Reason == ReasonClusterUnavailable {
				serving = true
				break
			}
			why = append(why, img+": "+r.Reason)
		}
		if serving {
			return nil
		}
		problems = append(problems, fmt.Sprintf("%s (%s)", cl.cfg.Name, strings.Join(why, ", ")))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("no shell image starts in any cluster: %s", strings.Join(problems, "; "))
}

// Probes returns the last pre-flight result of each image of each
// cluster, in config order (images never probed are left out).
func (b *Backend) Probes() []ProbeResult {
	b.images.mu.Lock()
	defer b.images.mu.Unlock()
	var out []ProbeResult
	for _, cl := range b.order {
		st := b.images.stateOf(cl.cfg.Name)
		for _, img := range b.imagesOf(cl) {
			if r, ok := st.probes[img]; ok {
				out = append(out, r)
			}
		}
	}
	return out
}

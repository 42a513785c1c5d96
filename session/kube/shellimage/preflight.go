package shellimage

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
	"k8s.io/apimachinery/pkg/watch"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

const (
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

// Check runs a probe for every shell image of every cluster, the
// clusters and images at once, and returns the results in config order.
// It records nothing (see Start): bastion check-config --preflight uses it
// as it is.
func (h *Health) Check(ctx context.Context) []ProbeResult {
	per := make([][]ProbeResult, len(h.cfg.Clusters))
	var wg sync.WaitGroup
	for i, cl := range h.cfg.Clusters {
		wg.Go(func() { per[i] = h.checkCluster(ctx, cl) })
	}
	wg.Wait()
	var out []ProbeResult
	for _, r := range per {
		out = append(out, r...)
	}
	return out
}

// checkCluster probes each of cl's images at once.
func (h *Health) checkCluster(ctx context.Context, cl *pods.Cluster) []ProbeResult {
	images := h.Images(cl)
	start := time.Now()
	all := func(reason, msg string) []ProbeResult {
		out := make([]ProbeResult, len(images))
		for i, img := range images {
			out[i] = ProbeResult{Cluster: cl.Name(), Image: img, Reason: reason, Message: msg, At: start, Took: time.Since(start)}
		}
		return out
	}
	c, err := cl.Client()
	if err != nil {
		return all(ReasonClusterUnavailable, "the cluster cannot be reached: "+err.Error())
	}
	ns := h.namespace(cl)
	if cl.Cfg.CreateNamespaces() {
		if err := c.EnsureNamespace(ctx, ns, h.cfg.Kube.StartTimeout); err != nil {
			if pods.Unavailable(err) {
				return all(ReasonClusterUnavailable, "the cluster's API server is unavailable: "+err.Error())
			}
			return all(ReasonRefused, err.Error())
		}
	}
	out := make([]ProbeResult, len(images))
	var wg sync.WaitGroup
	for i, img := range images {
		wg.Go(func() { out[i] = h.probe(ctx, c, ns, img) })
	}
	wg.Wait()
	if !slices.ContainsFunc(out, func(r ProbeResult) bool { return r.Reason == ReasonClusterUnavailable }) {
		h.sweepProbes(ctx, c, ns)
	}
	return out
}

// namespace is where cl's probe pods run.
func (h *Health) namespace(cl *pods.Cluster) string {
	if t := h.cfg.Kube.Preflight.Namespace; t != "" {
		return strings.ReplaceAll(t, "{project}", cl.Name())
	}
	return h.cfg.UserNamespace(cl, probeAccount)
}

// probePod is cl's shell pod spec turned into a probe of image.
func (h *Health) probePod(cl *pods.Cluster, ns, image string) *corev1.Pod {
	timeout := h.cfg.Kube.Preflight.Timeout
	pod := h.cfg.ShellPod(cl, auth.Account{Name: probeAccount, UID: probeUID, GID: probeUID, Shell: "/bin/sh"}, ns)
	pod.Name, pod.GenerateName = "", probeAccount+"-"
	for _, k := range []string{pods.LabelAccount, pods.LabelAccountHash} {
		delete(pod.Labels, k)
	}
	pod.Labels[pods.LabelComponent] = pods.ComponentPreflight
	delete(pod.Annotations, pods.AnnoSpecHash)
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
func (h *Health) probe(ctx context.Context, c *pods.Client, ns, image string) ProbeResult {
	timeout := h.cfg.Kube.Preflight.Timeout
	res := ProbeResult{Cluster: c.Project(), Image: image, At: time.Now()}
	finish := func(ok bool, reason, msg string) ProbeResult {
		res.OK, res.Reason, res.Message, res.Took = ok, reason, msg, time.Since(res.At)
		return res
	}
	created, err := c.Create(ctx, h.probePod(c.Cluster(), ns, image))
	switch {
	case err != nil && pods.Unavailable(err):
		return finish(false, ReasonClusterUnavailable, "the cluster's API server is unavailable: "+err.Error())
	case apierrors.IsNotFound(err):
		return finish(false, ReasonRefused, fmt.Sprintf("namespace %s does not exist: create it, or set kube.preflight.namespace", ns))
	case err != nil:
		return finish(false, ReasonRefused, "the API server refused the probe pod: "+err.Error())
	}
	defer h.deleteProbe(ctx, c, created)

	wctx, cancel := context.WithTimeoutCause(ctx, timeout, errProbeTimeout)
	defer cancel()
	last := created
	var verdict *ProbeResult
	err = c.Watch(wctx, ns, created.Name, created.ResourceVersion, func(ev watch.Event) (bool, error) {
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
	case pods.Unavailable(err):
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
		if w := st.State.Waiting; w != nil && pods.Waiting(w.Reason) != pods.NotStuck {
			m := w.Message
			if m == "" {
				m = "the container cannot start"
			}
			return true, false, w.Reason, m
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
func (h *Health) deleteProbe(ctx context.Context, c *pods.Client, pod *corev1.Pod) {
	if err := c.Delete(ctx, pod, pods.Now); err != nil {
		h.cfg.Log.Warn("pre-flight: cannot delete the probe pod; the next pre-flight will", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
}

// sweepProbes deletes probe pods of cl in ns left by a bastion that died
// while probing (older than a probe can live).
func (h *Health) sweepProbes(ctx context.Context, c *pods.Client, ns string) {
	list, err := c.List(ctx, ns, pods.LabelManagedBy+"="+pods.ManagedBy+","+pods.LabelComponent+"="+pods.ComponentPreflight+","+pods.LabelProject+"="+c.Project())
	if err != nil {
		return
	}
	old := 2 * (h.cfg.Kube.Preflight.Timeout + h.cfg.Kube.APITimeout)
	for i := range list {
		if p := &list[i]; time.Since(p.CreationTimestamp.Time) > old {
			h.deleteProbe(ctx, c, p)
		}
	}
}

// Start warns about fallback images given by tag, then runs the
// pre-flight loop and keeps the shell-image gauge up to date until the
// context ends. Call it once.
func (h *Health) Start() {
	for _, w := range h.cfg.Kube.FallbackWarnings() {
		h.cfg.Log.Warn("fallback shell image is not pinned by digest", "problem", w)
	}
	h.mu.Lock()
	h.running = true
	h.mu.Unlock()
	h.request("", "start")
	h.wg.Go(func() { h.loop(h.ctx) })
	h.wg.Go(func() { pods.Every(h.ctx, h.cfg.Kube.SweepInterval, h.updateGauge) })
	if d := h.cfg.Kube.Preflight.RetryInterval; d > 0 {
		h.wg.Go(func() { pods.Every(h.ctx, d, h.retry) })
	}
}

// Wait waits for the pre-flight loops; the context must have ended.
func (h *Health) Wait() { h.wg.Wait() }

// Recheck runs pre-flight again for every cluster soon (a config
// reload); it does not wait.
func (h *Health) Recheck(why string) { h.request("", why) }

// loop runs the pre-flight of the clusters asked for (request), and then
// updates the gauge.
func (h *Health) loop(ctx context.Context) {
	for {
		if pending := h.takePending(); len(pending) > 0 {
			h.preflight(ctx, pending)
			h.updateGauge(ctx)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
		}
	}
}

// retry asks for the pre-flight of every cluster with an image that
// failed or was not probed.
func (h *Health) retry(context.Context) {
	for _, cl := range h.cfg.Clusters {
		if h.needsRetry(cl) {
			h.request(cl.Name(), "retry: an image failed or the cluster could not be asked")
		}
	}
}

// preflight runs and records the pre-flight of the pending clusters ("":
// all) at once.
func (h *Health) preflight(ctx context.Context, pending map[string]string) {
	var wg sync.WaitGroup
	for _, cl := range h.cfg.Clusters {
		why, ok := pending[cl.Name()]
		if all, ok2 := pending[""]; ok2 {
			why, ok = all, true
		}
		if !ok {
			continue
		}
		wg.Go(func() {
			h.cfg.Log.Debug("pre-flight", "project", cl.Name(), "trigger", why)
			h.record(cl, h.checkCluster(ctx, cl))
		})
	}
	wg.Wait()
}

// record applies one cluster's results: the metric, the log, the
// unavailable marks.
func (h *Health) record(cl *pods.Cluster, results []ProbeResult) {
	if len(results) == 0 {
		return
	}
	primary := h.Images(cl)[0]
	h.mu.Lock()
	st := h.stateOf(cl.Name())
	var back []string
	for _, r := range results {
		st.probes[r.Image] = r
		mark, marked := st.bad[r.Image]
		switch {
		case r.OK && marked && r.At.After(mark.at):
			delete(st.bad, r.Image)
			back = append(back, r.Image)
		case !r.OK && pods.Waiting(r.Reason) == pods.PullFailed:
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
	h.mu.Unlock()

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
			h.cfg.Log.Info("pre-flight ok", "project", r.Cluster, "image", r.Image, "role", role,
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
		h.cfg.Log.Error("pre-flight failed", attrs...)
	}
	for _, img := range back {
		h.cfg.Log.Info("shell image works again; new pods use it", "project", cl.Name(), "image", img, "primary", img == primary)
	}
}

// needsRetry: cl has an image whose last probe failed, or was not probed.
func (h *Health) needsRetry(cl *pods.Cluster) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stateOf(cl.Name())
	for _, img := range h.Images(cl) {
		if r, ok := st.probes[img]; !ok || !r.OK {
			return true
		}
	}
	return len(st.bad) > 0
}

// Ready is the readiness check of the shell images: it fails only
// when no cluster can start any of its images (every image's last probe
// failed while the cluster answered). A failing primary with a working
// fallback, a cluster not checked yet and a cluster that is down (the
// backend's own check covers those) keep this replica ready.
func (h *Health) Ready(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var problems []string
	for _, cl := range h.cfg.Clusters {
		st := h.stateOf(cl.Name())
		var why []string
		serving := false
		for _, img := range h.Images(cl) {
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
		problems = append(problems, fmt.Sprintf("%s (%s)", cl.Name(), strings.Join(why, ", ")))
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("no shell image starts in any cluster: %s", strings.Join(problems, "; "))
}

// Probes returns the last pre-flight result of each image of each
// cluster, in config order (images never probed are left out).
func (h *Health) Probes() []ProbeResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []ProbeResult
	for _, cl := range h.cfg.Clusters {
		st := h.stateOf(cl.Name())
		for _, img := range h.Images(cl) {
			if r, ok := st.probes[img]; ok {
				out = append(out, r)
			}
		}
	}
	return out
}

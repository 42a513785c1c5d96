package kube

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session"
)

// Shell images and their fallbacks.
//
// Each cluster has a list of shell images: the primary, then the
// fallbacks (kube.pod.fallback_images, the previous images). A new shell
// pod is made from the first image not known to be unavailable. When a
// pod cannot start because its image cannot be pulled (ErrImagePull,
// ImagePullBackOff, ErrImageNeverPull), the pod is deleted (waitReady does
// that), the image is marked unavailable, and a pod is made at once from
// the next image; the user reads one line saying so. An image stays marked
// until a pre-flight probe that started after the mark finds it working
// (preflight.go): then new pods use it again. Pods made from any image of
// the list carry the spec hash of the primary's spec, so a healthy pod on
// an older image of the list is never replaced because of its image.

// pullFailures are the waiting reasons that mean the image cannot be had.
var pullFailures = []string{"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"}

// shellImages is what this replica knows about the clusters' shell
// images. The zero value is ready to use.
type shellImages struct {
	mu       sync.Mutex
	clusters map[string]*imageState
	pending  map[string]string // clusters whose pre-flight is due, and why
	kick     chan struct{}
	running  bool // the pre-flight loop runs (StartImageChecks)
	series   imageSeries
}

// imageState is one cluster's.
type imageState struct {
	bad    map[string]badMark     // images found unavailable
	probes map[string]ProbeResult // the last pre-flight result per image
}

type badMark struct {
	at     time.Time
	reason string
}

// stateOf returns cluster name's state; s.mu must be held.
func (s *shellImages) stateOf(name string) *imageState {
	if s.clusters == nil {
		s.clusters = map[string]*imageState{}
	}
	st := s.clusters[name]
	if st == nil {
		st = &imageState{bad: map[string]badMark{}, probes: map[string]ProbeResult{}}
		s.clusters[name] = st
	}
	return st
}

// request asks the pre-flight loop to check cluster (all clusters if
// empty) soon; it never blocks.
func (s *shellImages) request(cluster, why string) {
	s.mu.Lock()
	if s.pending == nil {
		s.pending = map[string]string{}
	}
	if _, ok := s.pending[cluster]; !ok {
		s.pending[cluster] = why
	}
	kick := s.kickLocked()
	s.mu.Unlock()
	select {
	case kick <- struct{}{}:
	default:
	}
}

func (s *shellImages) kickLocked() chan struct{} {
	if s.kick == nil {
		s.kick = make(chan struct{}, 1)
	}
	return s.kick
}

// takePending returns and clears the pending requests.
func (s *shellImages) takePending() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = nil
	return p
}

// imagesOf is cluster cl's shell images, the primary first.
func (b *Backend) imagesOf(cl *cluster) []string { return b.cfg.Images(cl.cfg) }

// imageOrder is the order in which a new pod tries cl's images: those not
// known to be unavailable first, then the others (a last resort: one may
// have come back).
func (b *Backend) imageOrder(cl *cluster) []string {
	all := b.imagesOf(cl)
	b.images.mu.Lock()
	defer b.images.mu.Unlock()
	st := b.images.stateOf(cl.cfg.Name)
	var good, bad []string
	for _, img := range all {
		if _, ok := st.bad[img]; ok {
			bad = append(bad, img)
		} else {
			good = append(good, img)
		}
	}
	return append(good, bad...)
}

// markUnavailable records that a shell pod could not pull image, and asks
// for a pre-flight of the cluster (which also sets the metric).
func (b *Backend) markUnavailable(cl *cluster, image, reason string) {
	b.images.mu.Lock()
	b.images.stateOf(cl.cfg.Name).bad[image] = badMark{at: time.Now(), reason: reason}
	running := b.images.running
	b.images.mu.Unlock()
	if running {
		b.images.request(cl.cfg.Name, "a shell pod could not pull "+image)
	}
}

func (b *Backend) unavailableNow(cl *cluster, image string) bool {
	b.images.mu.Lock()
	defer b.images.mu.Unlock()
	_, ok := b.images.stateOf(cl.cfg.Name).bad[image]
	return ok
}

// pullFailure reports the reason when err is a shell pod that could not
// start because its image could not be pulled.
func pullFailure(err error) (string, bool) {
	var se *startError
	if errors.As(err, &se) && slices.Contains(pullFailures, se.reason) {
		return se.reason, true
	}
	return "", false
}

func podImage(pod *corev1.Pod) string {
	if pod == nil || len(pod.Spec.Containers) == 0 {
		return ""
	}
	return pod.Spec.Containers[0].Image
}

// fallback is one session's way through its cluster's images while it
// acquires its pod.
type fallback struct {
	b      *Backend
	cl     *cluster
	id     identity
	ns     string
	note   func(string)
	order  []string // this session's order of the images
	cur    string   // the image a new pod is made from
	tried  []string // images that failed to pull in this session
	waited bool     // the session waited for its pod to start
}

func (b *Backend) newFallback(cl *cluster, id identity, ns string, note func(string)) *fallback {
	order := b.imageOrder(cl)
	return &fallback{b: b, cl: cl, id: id, ns: ns, note: note, order: order, cur: order[0]}
}

// want is the pod to create now: the shell pod's spec (its hash that of
// the primary's spec) with the current image.
func (f *fallback) want() *corev1.Pod {
	pod := podSpec(f.cl, f.id, f.ns)
	pod.Spec.Containers[0].Image = f.cur
	return pod
}

// next is called when a pod made from image could not start (err from
// waitReady, which deleted it). If its image could not be pulled and
// another image is left, it marks image unavailable, counts and logs the
// fallback, makes the next image current and returns true.
func (f *fallback) next(image string, err error) bool {
	reason, ok := pullFailure(err)
	if !ok {
		return false
	}
	if slices.Contains(f.b.imagesOf(f.cl), image) {
		f.b.markUnavailable(f.cl, image, reason)
	}
	if !slices.Contains(f.tried, image) {
		f.tried = append(f.tried, image)
	}
	for _, img := range f.order {
		if img == image || slices.Contains(f.tried, img) {
			continue
		}
		ops.ShellImageFallbacks.WithLabelValues(f.cl.cfg.Name, image).Inc()
		f.b.log.Warn("shell image unavailable; starting the pod from the next image",
			"project", f.cl.cfg.Name, "image", image, "reason", reason, "next", img, "account", f.id.acct.Name)
		f.cur = img
		return true
	}
	return false
}

// failure is the error when no image is left: the shell pod's own
// message for one image, or one naming every image tried.
func (f *fallback) failure(err error) error {
	if len(f.tried) < 2 {
		return err
	}
	f.b.log.Error("no shell image can be pulled; refusing the session", "project", f.cl.cfg.Name,
		"tried", strings.Join(f.tried, " "), "account", f.id.acct.Name)
	return session.UserErrorf(err, fmt.Sprintf("no shell image is available in %s (tried %s); administrators have been alerted",
		f.cl.cfg.Name, strings.Join(f.tried, ", ")))
}

// ready is called with the session's ready pod: if the session waited for
// it to start and it runs a fallback because the primary is unavailable,
// the user reads so, once.
func (f *fallback) ready(pod *corev1.Pod) {
	if !f.waited || f.note == nil {
		return
	}
	img := podImage(pod)
	primary := f.b.imagesOf(f.cl)[0]
	if img == primary || !slices.Contains(f.b.imagesOf(f.cl), img) {
		return
	}
	if !slices.Contains(f.tried, primary) && !f.b.unavailableNow(f.cl, primary) {
		return
	}
	f.b.log.Info("shell pod runs on a fallback image", "project", f.cl.cfg.Name, "pod", pod.Namespace+"/"+pod.Name,
		"image", img, "unavailable", primary)
	f.note(fmt.Sprintf("image %s is unavailable; your shell runs on the previous image %s", primary, img))
}

// noticeTo returns how a session's user is told something in one line:
// on the terminal for an interactive session, on stderr otherwise.
func noticeTo(r session.Request) func(string) {
	var w io.Writer
	eol := "\n"
	switch {
	case r.TTY != nil && r.Stdout != nil:
		w, eol = r.Stdout, "\r\n"
	case r.Stderr != nil:
		w = r.Stderr
	default:
		return nil
	}
	return func(line string) { _, _ = fmt.Fprintf(w, "bastion: %s%s", line, eol) }
}

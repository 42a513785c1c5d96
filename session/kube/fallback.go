package kube

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// A session's way through its cluster's shell images.
//
// A new shell pod is made from the first image not known to be
// unavailable (shellimage.Health.Order). When a pod cannot start because
// its image cannot be pulled (ErrImagePull, ImagePullBackOff,
// ErrImageNeverPull), the pod is deleted (waitReady does that), the image
// is marked unavailable, and a pod is made at once from the next image;
// the user reads one line saying so. Pods made from any image of the list
// carry the spec hash of the primary's spec, so a healthy pod on an older
// image of the list is never replaced because of its image.

// pullFailure reports the reason when err is a shell pod that could not
// start because its image could not be pulled.
func pullFailure(err error) (string, bool) {
	var se *startError
	if errors.As(err, &se) && pods.Waiting(se.reason) == pods.PullFailed {
		return se.reason, true
	}
	return "", false
}

// fallback is one session's way through its cluster's images while it
// acquires its pod.
type fallback struct {
	b      *Backend
	cl     *pods.Cluster
	id     identity
	ns     string
	note   func(string)
	order  []string // this session's order of the images
	cur    string   // the image a new pod is made from
	tried  []string // images that failed to pull in this session
	waited bool     // the session waited for its pod to start
}

func (b *Backend) newFallback(cl *pods.Cluster, id identity, ns string, note func(string)) *fallback {
	order := b.images.Order(cl)
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
	if slices.Contains(f.b.images.Images(f.cl), image) {
		f.b.images.MarkUnavailable(f.cl, image, reason)
	}
	if !slices.Contains(f.tried, image) {
		f.tried = append(f.tried, image)
	}
	for _, img := range f.order {
		if img == image || slices.Contains(f.tried, img) {
			continue
		}
		ops.ShellImageFallbacks.WithLabelValues(f.cl.Name(), image).Inc()
		f.b.log.Warn("shell image unavailable; starting the pod from the next image",
			"project", f.cl.Name(), "image", image, "reason", reason, "next", img, "account", f.id.acct.Name)
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
	f.b.log.Error("no shell image can be pulled; refusing the session", "project", f.cl.Name(),
		"tried", strings.Join(f.tried, " "), "account", f.id.acct.Name)
	return session.UserErrorf(err, fmt.Sprintf("no shell image is available in %s (tried %s); administrators have been alerted",
		f.cl.Name(), strings.Join(f.tried, ", ")))
}

// ready is called with the session's ready pod: if the session waited for
// it to start and it runs a fallback because the primary is unavailable,
// the user reads so, once.
func (f *fallback) ready(pod *corev1.Pod) {
	if !f.waited || f.note == nil {
		return
	}
	img := pods.Image(pod)
	images := f.b.images.Images(f.cl)
	primary := images[0]
	if img == primary || !slices.Contains(images, img) {
		return
	}
	if !slices.Contains(f.tried, primary) && !f.b.images.Unavailable(f.cl, primary) {
		return
	}
	f.b.log.Info("shell pod runs on a fallback image", "project", f.cl.Name(), "pod", pod.Namespace+"/"+pod.Name,
		"image", img, "unavailable", primary)
	f.note(fmt.Sprintf("image %s is unavailable; your shell runs on the previous image %s", primary, img))
}

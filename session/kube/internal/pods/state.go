package pods

import corev1 "k8s.io/api/core/v1"

// Ready reports whether pod runs and is ready, and is not being deleted.
func Ready(pod *corev1.Pod) bool {
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

// Finished reports whether pod's containers have all ended for good.
func Finished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// Image is the image of pod's first container, or "".
func Image(pod *corev1.Pod) string {
	if pod == nil || len(pod.Spec.Containers) == 0 {
		return ""
	}
	return pod.Spec.Containers[0].Image
}

// Stuck is what a container's waiting reason says about the pod: that it
// will not start without someone doing something.
type Stuck int

const (
	NotStuck     Stuck = iota
	PullFailed         // the image cannot be pulled (another image may work)
	BadImageName       // the reference itself is invalid
	SetupFailed        // the kubelet or runtime cannot create the container
	CrashLooping       // the container starts and dies
)

// waitingReasons is the one list of container waiting reasons that mean
// a pod will not start.
var waitingReasons = map[string]Stuck{
	"ErrImagePull":               PullFailed,
	"ImagePullBackOff":           PullFailed,
	"ErrImageNeverPull":          PullFailed,
	"InvalidImageName":           BadImageName,
	"CreateContainerConfigError": SetupFailed,
	"CreateContainerError":       SetupFailed,
	"CrashLoopBackOff":           CrashLooping,
	"RunContainerError":          CrashLooping,
}

// Waiting classifies a container's waiting reason.
func Waiting(reason string) Stuck { return waitingReasons[reason] }

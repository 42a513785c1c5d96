package pods

import (
	"io"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/bastion-ssh/bastion/config"
)

// The two ways of deleting a pod carry the preconditions and grace that
// keep a pod a session just started in (IfUnchanged) or end a pod that
// can never serve (Now); a pod already gone is no error.
func TestDelete(t *testing.T) {
	t.Parallel()
	k := config.Default().Kube
	cl := NewCluster(&k, config.KubeCluster{Name: "tools"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1", ResourceVersion: "9"}}
	cs := fake.NewClientset(pod.DeepCopy())
	var got []metav1.DeleteOptions
	cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		got = append(got, a.(k8stesting.DeleteAction).GetDeleteOptions())
		return false, nil, nil
	})
	cl.UseClient(cs)
	c, err := cl.Current()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(t.Context(), pod, IfUnchanged); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(t.Context(), pod, Now); err != nil {
		t.Errorf("deleting a pod already gone: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("%d deletes", len(got))
	}
	if p := got[0].Preconditions; *p.UID != "u1" || p.ResourceVersion == nil || *p.ResourceVersion != "9" || got[0].GracePeriodSeconds != nil {
		t.Errorf("IfUnchanged: %+v", got[0])
	}
	if p := got[1].Preconditions; *p.UID != "u1" || p.ResourceVersion != nil || got[1].GracePeriodSeconds == nil || *got[1].GracePeriodSeconds != 0 {
		t.Errorf("Now: %+v", got[1])
	}
}

// One list of waiting reasons: only pull failures make a session try the
// next image.
func TestWaiting(t *testing.T) {
	t.Parallel()
	for reason, want := range map[string]Stuck{
		"ErrImagePull": PullFailed, "ImagePullBackOff": PullFailed, "ErrImageNeverPull": PullFailed,
		"InvalidImageName": BadImageName, "CreateContainerConfigError": SetupFailed, "CreateContainerError": SetupFailed,
		"CrashLoopBackOff": CrashLooping, "RunContainerError": CrashLooping, "ContainerCreating": NotStuck, "": NotStuck,
	} {
		if got := Waiting(reason); got != want {
			t.Errorf("Waiting(%q) = %d, want %d", reason, got, want)
		}
	}
}

package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// Two replicas race to create the same account's pod: this one's create
// answers AlreadyExists because the other made it first. The session must
// share the other's pod (not fail, not make a second one), with its own
// count published on it beside the other replica's.
func TestAcquireSharesAPodCreatedMeanwhile(t *testing.T) {
	t.Parallel()
	b, cl := testBackend(t, "r/shell@sha256:01")
	t.Cleanup(b.Close)
	cs := fake.NewClientset()
	cl.UseClient(cs)
	podsGVR := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	creates := 0
	var theirs *corev1.Pod
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		creates++
		mine := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		// The other replica's pod: the same spec, its own count, ready.
		theirs = mine.DeepCopy()
		theirs.UID, theirs.ResourceVersion = "their-pod", "7"
		for k := range theirs.Annotations {
			if strings.HasPrefix(k, pods.AnnoSessionsPrefix) {
				delete(theirs.Annotations, k)
			}
		}
		theirs.Annotations[pods.AnnoSessionsPrefix+"other-replica"] = `{"n":1,"t":1}`
		theirs.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		if err := cs.Tracker().Add(theirs); err != nil {
			t.Fatal(err)
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "pods"}, mine.Name)
	})

	c, err := cl.Current()
	if err != nil {
		t.Fatal(err)
	}
	id := identity{acct: auth.Account{Name: "alice", UID: 5001, GID: 5001}, short: "alice", project: "tools"}
	pod, u, inst, err := b.acquire(t.Context(), c, id, "user-alice", nil, nil)
	if err != nil {
		t.Fatalf("acquire after AlreadyExists: %v", err)
	}
	defer b.pods.Untrack(u)
	if creates != 1 || pod.UID != "their-pod" || inst == nil {
		t.Fatalf("creates %d, pod %s: want the other replica's pod shared", creates, pod.UID)
	}
	got, err := cs.Tracker().Get(podsGVR, "user-alice", pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	a := got.(*corev1.Pod).Annotations
	if a[pods.AnnoSessionsPrefix+"other-replica"] == "" || !strings.HasPrefix(a[pods.AnnoSessionsPrefix+b.replica], `{"n":1,`) {
		t.Errorf("session annotations %v: want both replicas' counts", a)
	}
}

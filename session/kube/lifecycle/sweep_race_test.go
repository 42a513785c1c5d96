package lifecycle

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// The sweep deletes an idle pod only if it is still the version it
// looked at: when a session publishes its count between the list and
// the delete (Conflict), the pod is kept, and neither counted nor
// audited as reaped; an idle pod nobody touched is deleted and audited.
func TestSweepKeepsAPodThatChanged(t *testing.T) {
	t.Parallel()
	old := metav1.NewTime(time.Now().Add(-time.Hour))
	idlePod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "user-x", UID: types.UID("uid-" + name), ResourceVersion: "1", CreationTimestamp: old,
			Labels: map[string]string{pods.LabelManagedBy: pods.ManagedBy, pods.LabelComponent: pods.ComponentShell, pods.LabelProject: "tools"},
		}, Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	}
	cs := fake.NewClientset(idlePod("shell-busy"), idlePod("shell-idle"))
	podsGVR := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	var deletes []string
	cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		d := a.(k8stesting.DeleteAction)
		pre := d.GetDeleteOptions().Preconditions
		if pre == nil || pre.UID == nil || pre.ResourceVersion == nil {
			t.Errorf("delete of %s without UID and resourceVersion preconditions", d.GetName())
			return true, nil, nil
		}
		deletes = append(deletes, d.GetName())
		if d.GetName() == "shell-busy" {
			// A session published its count since the list.
			obj, _ := cs.Tracker().Get(podsGVR, "user-x", "shell-busy")
			p := obj.(*corev1.Pod).DeepCopy()
			p.ResourceVersion = "2"
			_ = cs.Tracker().Update(podsGVR, p, "user-x")
			if *pre.ResourceVersion != p.ResourceVersion {
				return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, d.GetName(), nil)
			}
		}
		return false, nil, nil
	})

	k := config.Default().Kube
	k.Clusters = []config.KubeCluster{{Name: "tools"}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl := pods.NewCluster(&k, k.Clusters[0], log)
	cl.UseClient(cs)
	var events sessiontest.SyncBuffer
	tr := New(t.Context(), Config{Replica: "self", Clusters: []*pods.Cluster{cl}, IdleTimeout: time.Minute,
		StartTimeout: time.Minute, HeartbeatInterval: time.Minute, SweepInterval: time.Minute, Log: log, Audit: audit.New(&events, log)})

	tr.sweepCluster(t.Context(), cl)

	if len(deletes) != 2 {
		t.Fatalf("deletes %q, want both pods tried", deletes)
	}
	left, err := cs.CoreV1().Pods("user-x").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Items) != 1 || left.Items[0].Name != "shell-busy" {
		t.Errorf("left %d pods, want only shell-busy", len(left.Items))
	}
	if got := events.String(); strings.Count(got, `"pod.reaped"`) != 1 || !strings.Contains(got, "shell-idle") || strings.Contains(got, "shell-busy") {
		t.Errorf("audit events %s", got)
	}
}

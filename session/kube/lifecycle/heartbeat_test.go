package lifecycle

import (
	"io"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// The heartbeat refreshes the pods whose sessions run, and leaves alone
// those whose sessions are all still starting: in a login storm, most of
// those pods do not exist yet, and each patch would fail (a warning) and
// take a request from kube.qps.
func TestHeartbeatSkipsStartingPods(t *testing.T) {
	t.Parallel()
	running := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "shell-running", Namespace: "user-a", UID: types.UID("uid-a"), ResourceVersion: "1"}}
	cs := fake.NewClientset(running)
	k := config.Default().Kube
	k.Clusters = []config.KubeCluster{{Name: "tools"}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl := pods.NewCluster(&k, k.Clusters[0], log)
	cl.UseClient(cs)
	tr := New(t.Context(), Config{Replica: "self", Clusters: []*pods.Cluster{cl}, IdleTimeout: time.Minute,
		StartTimeout: time.Minute, HeartbeatInterval: 50 * time.Millisecond, SweepInterval: time.Hour, Log: log})
	c, err := cl.Current()
	if err != nil {
		t.Fatal(err)
	}
	u := tr.Track(cl, "user-a", "shell-running")
	inst := tr.Watch(u, c, running)
	_ = tr.Track(cl, "user-b", "shell-starting") // no pod yet

	tr.heartbeatOnce(t.Context())
	patched := map[string]int{}
	for _, a := range cs.Actions() {
		if a.GetVerb() == "patch" {
			patched[a.GetNamespace()]++
		}
	}
	inst.stop()
	if patched["user-a"] != 1 || patched["user-b"] != 0 {
		t.Errorf("heartbeat patches by namespace %v, want user-a's running pod only", patched)
	}
}

package shellimage

import (
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

func TestProbeVerdict(t *testing.T) {
	t.Parallel()
	waiting := func(reason, msg string) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}
		return p
	}
	exited := func(code int32) *corev1.Pod {
		p := &corev1.Pod{}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{ImageID: "r/shell@sha256:aa", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Completed"}}}}
		return p
	}
	for _, c := range []struct {
		name       string
		pod        *corev1.Pod
		done, ok   bool
		reason     string
		msgContain string
	}{
		{"exited 0", exited(0), true, true, "", ""},
		{"exited 127", exited(127), true, false, ReasonExited, "exited with code 127"},
		{"never pull", waiting("ErrImageNeverPull", `Container image "x" is not present with pull policy of Never`), true, false, "ErrImageNeverPull", "not present"},
		{"pulling", waiting("ContainerCreating", ""), false, false, "", ""},
		{"pending", &corev1.Pod{}, false, false, "", ""},
	} {
		done, ok, reason, msg := probeVerdict(c.pod)
		if done != c.done || ok != c.ok || reason != c.reason || !strings.Contains(msg, c.msgContain) {
			t.Errorf("%s: %v %v %q %q", c.name, done, ok, reason, msg)
		}
	}
	if d := probeDigest(exited(0)); d != "sha256:aa" {
		t.Errorf("probe digest %q", d)
	}

	unsched := &corev1.Pod{}
	unsched.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
		Message: "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."}}
	if r, m := probeTimeout(unsched, 5*time.Second); r != "Unschedulable" || m != "the probe pod was not scheduled within 5s: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector." {
		t.Errorf("unschedulable: %q %q", r, m)
	}
	if r, m := probeTimeout(waiting("ContainerCreating", ""), 5*time.Second); r != ReasonTimeout || !strings.Contains(m, "did not start within 5s on node n1 (ContainerCreating)") {
		t.Errorf("slow start: %q %q", r, m)
	}
}

// testHealth is the shell-image state of one cluster "tools" with images
// (the primary first); shell pods are made by shellPodSpec.
func testHealth(t *testing.T, images ...string) (*Health, *pods.Cluster) {
	t.Helper()
	k := config.Default().Kube
	k.Pod.Image = images[0]
	k.Pod.FallbackImages = images[1:]
	k.Clusters = []config.KubeCluster{{Name: "tools", Kubeconfig: "/nonexistent"}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl := pods.NewCluster(&k, k.Clusters[0], log)
	h := New(t.Context(), Config{
		Kube: &k, Clusters: []*pods.Cluster{cl}, ShellPod: shellPodSpec,
		UserNamespace: func(cl *pods.Cluster, account string) string { return "user-" + account },
		Log:           log,
	})
	return h, cl
}

// shellPodSpec stands for the kube backend's shell pod: what a probe must
// keep of it.
func shellPodSpec(cl *pods.Cluster, acct auth.Account, ns string) *corev1.Pod {
	no, yes := false, true
	uid := int64(acct.UID)
	p := &corev1.Pod{}
	p.Name, p.Namespace = "shell-"+acct.Name, ns
	p.Labels = map[string]string{pods.LabelManagedBy: pods.ManagedBy, pods.LabelComponent: pods.ComponentShell,
		pods.LabelProject: cl.Name(), pods.LabelAccount: acct.Name, pods.LabelAccountHash: "h"}
	p.Annotations = map[string]string{pods.AnnoSpecHash: "x", pods.AnnoAccount: acct.Name}
	p.Spec.NodeSelector = cl.Pod.NodeSelector
	p.Spec.AutomountServiceAccountToken = &no
	p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &uid, RunAsNonRoot: &yes}
	p.Spec.Containers = []corev1.Container{{Name: pods.Container, Image: cl.Pod.Image, Command: []string{"/bin/sh", "-c", "sleep"},
		WorkingDir: "/home", SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes}}}
	return p
}

// The probe pod is the shell pod's spec (security context, resources,
// scheduling) with the image under test, a trivial command, a deadline,
// and labels that keep it out of the shell pods' sweep and inventory.
func TestProbePod(t *testing.T) {
	t.Parallel()
	h, cl := testHealth(t, "r/shell@sha256:01")
	cl.Pod.NodeSelector = map[string]string{"pool": "shells"}
	p := h.probePod(cl, "ns", "r/shell@sha256:02")
	c := p.Spec.Containers[0]
	if c.Image != "r/shell@sha256:02" || !slices.Equal(c.Command, []string{"/bin/sh", "-c", "exit 0"}) || c.WorkingDir != "" {
		t.Errorf("container %s %q %q", c.Image, c.Command, c.WorkingDir)
	}
	if *c.SecurityContext.AllowPrivilegeEscalation || !*c.SecurityContext.ReadOnlyRootFilesystem || !*p.Spec.SecurityContext.RunAsNonRoot ||
		*p.Spec.SecurityContext.RunAsUser != probeUID || p.Spec.NodeSelector["pool"] != "shells" || *p.Spec.AutomountServiceAccountToken {
		t.Errorf("the probe differs from a shell pod: %+v", p.Spec)
	}
	if *p.Spec.ActiveDeadlineSeconds != 60 || *p.Spec.TerminationGracePeriodSeconds != 1 || p.GenerateName != "bastion-preflight-" || p.Name != "" {
		t.Errorf("deadline %d name %q/%q", *p.Spec.ActiveDeadlineSeconds, p.GenerateName, p.Name)
	}
	if p.Labels[pods.LabelComponent] != pods.ComponentPreflight || p.Labels[pods.LabelProject] != "tools" || p.Labels[pods.LabelAccount] != "" ||
		p.Labels[pods.LabelAccountHash] != "" || p.Annotations[pods.AnnoSpecHash] != "" {
		t.Errorf("labels %v annotations %v", p.Labels, p.Annotations)
	}
	if h.namespace(cl) != "user-bastion-preflight" {
		t.Errorf("namespace %q", h.namespace(cl))
	}
	h.cfg.Kube.Preflight.Namespace = "bastion-{project}"
	if h.namespace(cl) != "bastion-tools" {
		t.Errorf("namespace %q", h.namespace(cl))
	}
}

package kube

import (
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session"
)

func TestImageReferences(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ id, digest string }{
		{"docker.io/library/debian@sha256:aa", "sha256:aa"},
		{"docker-pullable://r.example:5000/shell@sha256:bb", "sha256:bb"},
		{"sha256:cc", "sha256:cc"},
		{"", ""},
		{"r/shell:tag", ""},
	} {
		if got := digestOf(c.id); got != c.digest {
			t.Errorf("digestOf(%q) = %q, want %q", c.id, got, c.digest)
		}
	}
	for _, c := range []struct{ ref, repo, digest string }{
		{"r.example:5000/a/shell:v1", "r.example:5000/a/shell", ""},
		{"r.example:5000/a/shell@sha256:dd", "r.example:5000/a/shell", "sha256:dd"},
		{"r.example/shell:v1@sha256:ee", "r.example/shell", "sha256:ee"},
		{"shell", "shell", ""},
	} {
		if got := repository(c.ref); got != c.repo {
			t.Errorf("repository(%q) = %q, want %q", c.ref, got, c.repo)
		}
		if got := refDigest(c.ref); got != c.digest {
			t.Errorf("refDigest(%q) = %q, want %q", c.ref, got, c.digest)
		}
	}
}

func shellPod(image, imageID string, phase corev1.PodPhase) corev1.Pod {
	p := corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: containerName, Image: image}}}}
	p.Status.Phase = phase
	if imageID != "" {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerName, ImageID: imageID}}
	}
	return p
}

// The inventory: configured images first (primary, fallbacks), each with
// the digests its pods run, then what only pods still run; ended pods do
// not count; a tag no pod runs has no digest unless pre-flight saw one.
func TestTally(t *testing.T) {
	t.Parallel()
	configured := []string{"r/shell:new", "r/shell@sha256:02", "r/shell:older"}
	pods := []corev1.Pod{
		shellPod("r/shell:new", "r/shell@sha256:03", corev1.PodRunning),
		shellPod("r/shell:new", "r/shell@sha256:03", corev1.PodRunning),
		shellPod("r/shell:new", "r/shell@sha256:09", corev1.PodRunning), // the tag moved
		shellPod("r/shell:new", "", corev1.PodPending),                  // not started
		shellPod("r/shell@sha256:01", "r/shell@sha256:01", corev1.PodRunning),
		shellPod("r/old:1", "sha256:77", corev1.PodRunning),
		shellPod("r/gone:1", "r/gone@sha256:66", corev1.PodSucceeded),
	}
	got := tally(configured, pods, map[string]string{"r/shell:older": "sha256:05"})
	var lines []string
	for _, u := range got {
		lines = append(lines, u.String())
	}
	want := []string{
		"r/shell:new - 1 primary",
		"r/shell:new sha256:03 2 primary",
		"r/shell:new sha256:09 1 primary",
		"r/shell@sha256:02 sha256:02 0 fallback",
		"r/shell:older sha256:05 0 fallback",
		"r/old:1 sha256:77 1 ",
		"r/shell@sha256:01 sha256:01 1 ",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("tally:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	protect, unresolved := ProtectList([]ClusterImages{{Cluster: "a", Images: got}, {Cluster: "b", Images: got[:2]}})
	wantProtect := []string{"r/old@sha256:77", "r/shell@sha256:01", "r/shell@sha256:02", "r/shell@sha256:03", "r/shell@sha256:05", "r/shell@sha256:09"}
	if !slices.Equal(protect, wantProtect) || !slices.Equal(unresolved, []string{"r/shell:new"}) {
		t.Errorf("protect %q\nunresolved %q", protect, unresolved)
	}
}

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

func testBackend(t *testing.T, images ...string) (*Backend, *cluster) {
	t.Helper()
	k := config.Default().Kube
	k.Pod.Image = images[0]
	k.Pod.FallbackImages = images[1:]
	k.DefaultProject = "tools"
	k.Clusters = []config.KubeCluster{{Name: "tools", Kubeconfig: "/nonexistent"}}
	b, err := New(t.Context(), k, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return b, b.clusters["tools"]
}

// The probe pod is the shell pod's spec (security context, resources,
// scheduling) with the image under test, a trivial command, a deadline,
// and labels that keep it out of the shell pods' sweep and inventory.
func TestProbePod(t *testing.T) {
	t.Parallel()
	b, cl := testBackend(t, "r/shell@sha256:01")
	b.cfg.Pod.NodeSelector = map[string]string{"pool": "shells"}
	cl.pod.NodeSelector = map[string]string{"pool": "shells"}
	p := probePod(cl, "ns", "r/shell@sha256:02", 30*time.Second)
	shell := podSpec(cl, identity{acct: auth.Account{Name: "x", UID: 5000, GID: 5000}}, "ns")
	c, sc := p.Spec.Containers[0], shell.Spec.Containers[0]
	if c.Image != "r/shell@sha256:02" || !slices.Equal(c.Command, []string{"/bin/sh", "-c", "exit 0"}) {
		t.Errorf("container %s %q", c.Image, c.Command)
	}
	if *c.SecurityContext.AllowPrivilegeEscalation || !*c.SecurityContext.RunAsNonRoot || *c.SecurityContext.ReadOnlyRootFilesystem != *sc.SecurityContext.ReadOnlyRootFilesystem ||
		c.Resources.Limits.Memory().Cmp(*sc.Resources.Limits.Memory()) != 0 || p.Spec.NodeSelector["pool"] != "shells" || *p.Spec.AutomountServiceAccountToken {
		t.Errorf("the probe differs from a shell pod: %+v", p.Spec)
	}
	if *p.Spec.ActiveDeadlineSeconds != 60 || p.GenerateName != "bastion-preflight-" || p.Name != "" {
		t.Errorf("deadline %d name %q/%q", *p.Spec.ActiveDeadlineSeconds, p.GenerateName, p.Name)
	}
	if p.Labels[labelComponent] != componentPreflight || p.Labels[labelProject] != "tools" || p.Labels[labelAccount] != "" {
		t.Errorf("labels %v", p.Labels)
	}
	if b.preflightNamespace(cl) != "user-bastion-preflight" {
		t.Errorf("namespace %q", b.preflightNamespace(cl))
	}
	b.cfg.Preflight.Namespace = "bastion-{project}"
	if b.preflightNamespace(cl) != "bastion-tools" {
		t.Errorf("namespace %q", b.preflightNamespace(cl))
	}
}

// A session's image order and fallbacks: an unavailable image goes last
// until a later probe finds it working; a pod from a fallback keeps the
// primary's spec hash (so it is not replaced for its image); only pull
// failures fall back; the user is told once, on the right stream.
func TestFallbackOrder(t *testing.T) {
	t.Parallel()
	b, cl := testBackend(t, "r/shell:p", "r/shell@sha256:01", "r/shell@sha256:00")
	id := identity{acct: auth.Account{Name: "alice", UID: 5001, GID: 5001}, short: "alice", project: "tools"}
	var notes []string
	fb := b.newFallback(cl, id, "ns", func(s string) { notes = append(notes, s) })
	primaryPod := fb.want()
	if podImage(primaryPod) != "r/shell:p" {
		t.Fatalf("first image %s", podImage(primaryPod))
	}
	pull := session.UserErrorf(&startError{reason: "ErrImageNeverPull"}, "the shell image is not available")
	if fb.next("r/shell:p", session.UserErrorf(&startError{reason: "Unschedulable"}, "no room")) {
		t.Error("fell back on Unschedulable")
	}
	if !fb.next("r/shell:p", pull) || fb.cur != "r/shell@sha256:01" {
		t.Fatalf("no fallback to the second image: %s", fb.cur)
	}
	fbPod := fb.want()
	if fbPod.Annotations[annoSpecHash] != primaryPod.Annotations[annoSpecHash] || podImage(fbPod) != "r/shell@sha256:01" {
		t.Errorf("fallback pod: hash %s vs %s, image %s", fbPod.Annotations[annoSpecHash], primaryPod.Annotations[annoSpecHash], podImage(fbPod))
	}
	fb.waited = true
	fb.ready(fbPod)
	if !slices.Equal(notes, []string{"image r/shell:p is unavailable; your shell runs on the previous image r/shell@sha256:01"}) {
		t.Errorf("notes %q", notes)
	}
	if got := b.imageOrder(cl); !slices.Equal(got, []string{"r/shell@sha256:01", "r/shell@sha256:00", "r/shell:p"}) {
		t.Errorf("order after the failure %q", got)
	}
	if !fb.next("r/shell@sha256:01", pull) || fb.cur != "r/shell@sha256:00" {
		t.Fatalf("no fallback to the third image: %s", fb.cur)
	}
	if fb.next("r/shell@sha256:00", pull) {
		t.Error("fell back with no image left")
	}
	err := fb.failure(pull)
	if msg, _ := session.UserMessage(err); msg != "no shell image is available in tools (tried r/shell:p, r/shell@sha256:01, r/shell@sha256:00); administrators have been alerted" {
		t.Errorf("failure %q", msg)
	}

	// A probe that started before the mark does not clear it; one after does.
	before := time.Now().Add(-time.Hour)
	b.recordProbes(cl, []ProbeResult{{Cluster: "tools", Image: "r/shell:p", OK: true, At: before}})
	if !b.unavailableNow(cl, "r/shell:p") {
		t.Error("an older probe cleared the mark")
	}
	b.recordProbes(cl, []ProbeResult{
		{Cluster: "tools", Image: "r/shell:p", OK: true, At: time.Now()},
		{Cluster: "tools", Image: "r/shell@sha256:01", OK: true, At: time.Now()},
		{Cluster: "tools", Image: "r/shell@sha256:00", OK: true, At: time.Now()},
	})
	if got := b.imageOrder(cl); !slices.Equal(got, []string{"r/shell:p", "r/shell@sha256:01", "r/shell@sha256:00"}) {
		t.Errorf("order after pre-flight found all working %q", got)
	}
	if err := b.ImagesReady(t.Context()); err != nil {
		t.Errorf("ready: %v", err)
	}

	// Readiness: a working fallback keeps it, no working image at all fails
	// it, an unreachable cluster does not.
	now := time.Now()
	b.recordProbes(cl, []ProbeResult{
		{Cluster: "tools", Image: "r/shell:p", Reason: "ErrImagePull", At: now},
		{Cluster: "tools", Image: "r/shell@sha256:01", OK: true, At: now},
		{Cluster: "tools", Image: "r/shell@sha256:00", Reason: "ErrImagePull", At: now},
	})
	if err := b.ImagesReady(t.Context()); err != nil {
		t.Errorf("ready with a working fallback: %v", err)
	}
	b.recordProbes(cl, []ProbeResult{{Cluster: "tools", Image: "r/shell@sha256:01", Reason: "ErrImageNeverPull", At: now}})
	if err := b.ImagesReady(t.Context()); err == nil || !strings.Contains(err.Error(), "no shell image starts in any cluster: tools (r/shell:p: ErrImagePull, r/shell@sha256:01: ErrImageNeverPull") {
		t.Errorf("not ready: %v", err)
	}
	b.recordProbes(cl, []ProbeResult{{Cluster: "tools", Image: "r/shell@sha256:00", Reason: ReasonClusterUnavailable, At: now}})
	if err := b.ImagesReady(t.Context()); err != nil {
		t.Errorf("cluster down counts against readiness: %v", err)
	}
}

func TestNoticeTo(t *testing.T) {
	t.Parallel()
	var out, errOut strings.Builder
	noticeTo(session.Request{Stdout: &out, Stderr: &errOut, TTY: &session.TTY{}})("hello")
	noticeTo(session.Request{Stdout: &out, Stderr: &errOut})("there")
	if out.String() != "bastion: hello\r\n" || errOut.String() != "bastion: there\n" {
		t.Errorf("tty %q, stderr %q", out.String(), errOut.String())
	}
	if noticeTo(session.Request{}) != nil {
		t.Error("a notice with nowhere to go")
	}
	if _, ok := pullFailure(errors.New("x")); ok {
		t.Error("a plain error is a pull failure")
	}
}

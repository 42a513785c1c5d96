package shellimage

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
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
	p := corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: pods.Container, Image: image}}}}
	p.Status.Phase = phase
	if imageID != "" {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: pods.Container, ImageID: imageID}}
	}
	return p
}

// The inventory: configured images first (primary, fallbacks), each with
// the digests its pods run, then what only pods still run; ended pods do
// not count; a tag no pod runs has no digest unless pre-flight saw one.
func TestTally(t *testing.T) {
	t.Parallel()
	configured := []string{"r/shell:new", "r/shell@sha256:02", "r/shell:older"}
	live := []corev1.Pod{
		shellPod("r/shell:new", "r/shell@sha256:03", corev1.PodRunning),
		shellPod("r/shell:new", "r/shell@sha256:03", corev1.PodRunning),
		shellPod("r/shell:new", "r/shell@sha256:09", corev1.PodRunning), // the tag moved
		shellPod("r/shell:new", "", corev1.PodPending),                  // not started
		shellPod("r/shell@sha256:01", "r/shell@sha256:01", corev1.PodRunning),
		shellPod("r/old:1", "sha256:77", corev1.PodRunning),
		shellPod("r/gone:1", "r/gone@sha256:66", corev1.PodSucceeded),
	}
	got := tally(configured, live, map[string]string{"r/shell:older": "sha256:05"})
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

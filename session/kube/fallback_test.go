package kube

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// testBackend is a backend of one cluster "tools" with images (the
// primary first) whose kubeconfig does not exist.
func testBackend(t *testing.T, images ...string) (*Backend, *pods.Cluster) {
	t.Helper()
	k := config.Default().Kube
	k.Pod.Image = images[0]
	k.Pod.FallbackImages = images[1:]
	k.DefaultProject = "tools"
	k.Clusters = []config.KubeCluster{{Name: "tools", Kubeconfig: "/nonexistent"}}
	b, err := New(t.Context(), Config{Kube: k, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return b, b.clusters["tools"]
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
	if pods.Image(primaryPod) != "r/shell:p" {
		t.Fatalf("first image %s", pods.Image(primaryPod))
	}
	pull := session.UserErrorf(&startError{reason: "ErrImageNeverPull"}, "the shell image is not available")
	if fb.next("r/shell:p", session.UserErrorf(&startError{reason: "Unschedulable"}, "no room")) {
		t.Error("fell back on Unschedulable")
	}
	if !fb.next("r/shell:p", pull) || fb.cur != "r/shell@sha256:01" {
		t.Fatalf("no fallback to the second image: %s", fb.cur)
	}
	fbPod := fb.want()
	if fbPod.Annotations[pods.AnnoSpecHash] != primaryPod.Annotations[pods.AnnoSpecHash] || pods.Image(fbPod) != "r/shell@sha256:01" {
		t.Errorf("fallback pod: hash %s vs %s, image %s", fbPod.Annotations[pods.AnnoSpecHash], primaryPod.Annotations[pods.AnnoSpecHash], pods.Image(fbPod))
	}
	fb.waited = true
	fb.ready(fbPod)
	if !slices.Equal(notes, []string{"image r/shell:p is unavailable; your shell runs on the previous image r/shell@sha256:01"}) {
		t.Errorf("notes %q", notes)
	}
	if got := b.images.Order(cl); !slices.Equal(got, []string{"r/shell@sha256:01", "r/shell@sha256:00", "r/shell:p"}) {
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

}

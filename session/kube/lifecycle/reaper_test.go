package lifecycle

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

func TestIdleVerdict(t *testing.T) {
	t.Parallel()
	now := time.Now()
	const idle, stale, start = 30 * time.Minute, 3 * time.Minute, time.Minute
	ready := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	pod := func(age time.Duration, status corev1.PodStatus, entries map[string]string) *corev1.Pod {
		a := map[string]string{}
		for r, v := range entries {
			a[pods.AnnoSessionsPrefix+r] = v
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(now.Add(-age)), Annotations: a}, Status: status}
	}
	at := func(d time.Duration, n int) string { return sessionValue(n, now.Add(-d)) }
	tests := []struct {
		name string
		pod  *corev1.Pod
		reap bool
	}{
		{"new and unused", pod(time.Minute, ready, nil), false},
		{"old and never used", pod(time.Hour, ready, nil), true},
		{"other replica has sessions", pod(time.Hour, ready, map[string]string{"b": at(time.Minute, 2)}), false},
		{"other replica's count is stale", pod(5*time.Hour, ready, map[string]string{"b": at(4*time.Hour, 2)}), true},
		{"stale but recent activity", pod(5*time.Hour, ready, map[string]string{"b": at(10*time.Minute, 2)}), false},
		{"last session ended long ago", pod(5*time.Hour, ready, map[string]string{"b": at(time.Hour, 0)}), true},
		{"last session ended recently", pod(5*time.Hour, ready, map[string]string{"b": at(time.Minute, 0)}), false},
		{"own entry is ignored", pod(5*time.Hour, ready, map[string]string{"self": at(time.Second, 3)}), false},
		{"own old entry", pod(5*time.Hour, ready, map[string]string{"self": at(time.Hour, 3)}), true},
		{"ended", pod(time.Minute, corev1.PodStatus{Phase: corev1.PodFailed}, nil), true},
		{"never ready", pod(3*time.Minute, corev1.PodStatus{Phase: corev1.PodPending}, nil), true},
		{"starting", pod(10*time.Second, corev1.PodStatus{Phase: corev1.PodPending}, nil), false},
		{"garbage annotation", pod(time.Hour, ready, map[string]string{"b": "{not json"}), true},
	}
	for _, tt := range tests {
		got, _ := idleVerdict(tt.pod, "self", now, idle, stale, start)
		if (got != "") != tt.reap {
			t.Errorf("%s: verdict %q, want reap=%v", tt.name, got, tt.reap)
		}
	}
}

package kubetest

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// EchoService runs ShellImage's echo listener on 8080 in ns as pod
// "echo" (uid and gid uid, extra labels added to app=echo), behind a
// Service "echo" on port 80, and waits until the Service has a ready
// endpoint.
func EchoService(t testing.TB, client kubernetes.Interface, ns string, uid int64, labels map[string]string) {
	t.Helper()
	ctx := t.Context()
	no := false
	podLabels := map[string]string{"app": "echo"}
	for k, v := range labels {
		podLabels[k] = v
	}
	_, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Labels: podLabels},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			SecurityContext:              &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid},
			Containers: []corev1.Container{{
				Name: "echo", Image: ShellImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{EchoCommand, "-addr", ":8080"},
				Ports:   []corev1.ContainerPort{{Name: "echo", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1,
					ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("echo pod: %v", err)
	}
	_, err = client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports:    []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("echo")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("echo service: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := WaitForPod(wctx, client, ns, "echo", PodReady); err != nil {
		t.Fatal(err)
	}
	// The EndpointSlice controller follows readiness within moments.
	for {
		slices, err := client.DiscoveryV1().EndpointSlices(ns).List(wctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=echo"})
		if err == nil {
			for _, s := range slices.Items {
				for _, ep := range s.Endpoints {
					if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
						return
					}
				}
			}
		}
		select {
		case <-wctx.Done():
			t.Fatalf("service echo in %s has no ready endpoint", ns)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

package integration

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestKubeCredentials: kubectl in the shell, with the account's own
// credentials (kube.pod.credentials: serviceaccount, issue 14): the real
// OpenSSH client runs the shell image's kubectl in the pod, as a person,
// as a tool (user+tool and become), which lists its own namespace and is
// Forbidden elsewhere; the token is the projected, short-lived one and
// nothing else in the pod is a credential. Then the same project with
// credentials: none makes, for the next login, a pod without any (kubectl
// finds no server, as before credentials existed).
func TestKubeCredentials(t *testing.T) {
	w := startKubeWorld(t, kubeOptions{podKeys: `    credentials_token_lifetime: 20m
    credentials_api_server: {pod_api_server}
`})
	s := w.bast
	alice, bob, mytool := w.ns("user", "alice"), w.ns("user", "bob"), w.ns("tool", "mytool")

	// kubectl runs in the pod: its output, its stderr and status.
	kubectl := func(t *testing.T, login, key, cmd string) (string, string, int) {
		t.Helper()
		return w.ssh(t, s, login, key, "", "--", cmd)
	}
	shellPod := func(t *testing.T, ns string) corev1.Pod {
		t.Helper()
		list, err := w.client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=shell"})
		if err != nil || len(list.Items) != 1 {
			t.Fatalf("shell pods in %s: %v %v", ns, list, err)
		}
		return list.Items[0]
	}

	t.Run("a person lists their own namespace", func(t *testing.T) {
		out, errOut, code := kubectl(t, "alice", "alice-1", "kubectl get pods -o name; kubectl config view --minify -o jsonpath='{..namespace}'")
		pod := shellPod(t, alice)
		if code != 0 || !strings.Contains(out, "pod/"+pod.Name+"\n") || !strings.HasSuffix(out, "\n"+alice) {
			t.Errorf("alice: kubectl get pods: exit %d stdout %q stderr %q (want pod/%s, namespace %s)", code, out, errOut, pod.Name, alice)
		}
		t.Logf("alice$ kubectl get pods -o name\n%s", out)
	})

	t.Run("a tool lists its own namespace, by user+tool and by become", func(t *testing.T) {
		for _, c := range []struct{ login, cmd string }{
			{"alice+mytool", "kubectl get pods -o name"},
			{"alice", "become mytool kubectl get pods -o name"},
		} {
			out, errOut, code := kubectl(t, c.login, "alice-1", c.cmd)
			pod := shellPod(t, mytool)
			if code != 0 || strings.TrimSpace(out) != "pod/"+pod.Name {
				t.Errorf("%s %q: exit %d stdout %q stderr %q (want pod/%s in %s)", c.login, c.cmd, code, out, errOut, pod.Name, mytool)
			}
		}
	})

	t.Run("other namespaces are Forbidden", func(t *testing.T) {
		for _, c := range []struct{ login, ns string }{
			{"alice", w.ns("tool", "othertool")}, {"alice", bob}, {"alice", "kube-system"}, {"alice", mytool},
			{"alice+mytool", alice}, {"alice+mytool", w.ns("tool", "othertool")},
		} {
			out, errOut, code := kubectl(t, c.login, "alice-1", "kubectl -n "+c.ns+" get pods")
			if code == 0 || !strings.Contains(errOut, "Forbidden") || !strings.Contains(errOut, "cannot list resource \"pods\"") {
				t.Errorf("%s: kubectl -n %s get pods: exit %d stdout %q stderr %q; want Forbidden", c.login, c.ns, code, out, errOut)
			}
		}
		// Nor anything cluster-wide, nor the namespace's RBAC.
		for _, cmd := range []string{"kubectl get nodes", "kubectl get pods -A", "kubectl get rolebindings", "kubectl create rolebinding x --clusterrole=admin --serviceaccount=" + alice + ":bastion-shell"} {
			if out, errOut, code := kubectl(t, "alice", "alice-1", cmd); code == 0 || !strings.Contains(strings.ToLower(errOut), "forbidden") {
				t.Errorf("alice: %s: exit %d stdout %q stderr %q; want Forbidden", cmd, code, out, errOut)
			}
		}
	})

	t.Run("the token is short-lived and the only credential", func(t *testing.T) {
		out, errOut, code := kubectl(t, "alice", "alice-1", `echo "$KUBECONFIG"; cat /etc/bastion/kube/token; echo; ls /var/run/secrets/kubernetes.io 2>&1 || true`)
		lines := strings.Split(out, "\n")
		if code != 0 || len(lines) < 3 || lines[0] != "/etc/bastion/kube/config" {
			t.Fatalf("exit %d stdout %q stderr %q", code, out, errOut)
		}
		parts := strings.Split(lines[1], ".")
		if len(parts) != 3 {
			t.Fatalf("token %q is not a JWT", lines[1])
		}
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var claims struct {
			Sub      string `json:"sub"`
			Exp, Iat int64
		}
		if err := json.Unmarshal(payload, &claims); err != nil {
			t.Fatal(err)
		}
		if life := time.Duration(claims.Exp-claims.Iat) * time.Second; life != 20*time.Minute {
			t.Errorf("token lifetime %v, want credentials_token_lifetime 20m", life)
		}
		if want := "system:serviceaccount:" + alice + ":bastion-shell"; claims.Sub != want {
			t.Errorf("token subject %q, want %q", claims.Sub, want)
		}
		if !strings.Contains(out, "No such file or directory") {
			t.Errorf("the pod has the automounted ServiceAccount directory: %q", out)
		}
		pod := shellPod(t, alice)
		if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken || pod.Spec.ServiceAccountName != "bastion-shell" {
			t.Errorf("pod automount %v serviceAccountName %q", pod.Spec.AutomountServiceAccountToken, pod.Spec.ServiceAccountName)
		}
		rb, err := w.client.RbacV1().RoleBindings(alice).Get(t.Context(), "bastion-shell", metav1.GetOptions{})
		if err != nil || rb.RoleRef.Name != "edit" || rb.Labels["app.kubernetes.io/managed-by"] != "bastion" {
			t.Errorf("RoleBinding %+v: %v", rb, err)
		}
	})

	t.Run("credentials none: the next pod has none", func(t *testing.T) {
		before := shellPod(t, alice)
		cfgPath := filepath.Join(w.dir, "bastion.yaml")
		data, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg := strings.Replace(string(data), "    credentials_token_lifetime: 20m\n", "    credentials: none\n", 1)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		s2 := w.serve(t) // reads the new config
		out, errOut, code := w.ssh(t, s2, "alice", "alice-1", "", "--", `echo "KUBECONFIG=${KUBECONFIG-unset}"; ls /etc/bastion/kube /var/run/secrets/kubernetes.io 2>&1; kubectl get pods`)
		after := shellPod(t, alice)
		if after.UID == before.UID {
			t.Errorf("the pod made with credentials was kept (uid %s) after credentials: none", after.UID)
		}
		if code == 0 || !strings.Contains(out, "KUBECONFIG=unset\n") || strings.Contains(out, "token") ||
			!strings.Contains(errOut, "localhost:8080 was refused") {
			t.Errorf("credentials none: exit %d stdout %q stderr %q; want no KUBECONFIG, no token, kubectl finding no server", code, out, errOut)
		}
		// The API server fills in "default"; its token is not mounted.
		if after.Spec.ServiceAccountName != "default" || *after.Spec.AutomountServiceAccountToken {
			t.Errorf("credentials none: pod serviceAccountName %q automount %v", after.Spec.ServiceAccountName, *after.Spec.AutomountServiceAccountToken)
		}
		for _, v := range after.Spec.Volumes {
			if v.Projected != nil {
				t.Errorf("credentials none: projected volume %s", v.Name)
			}
		}
	})
	t.Run("a ClusterRole bastion may not bind: one line for the user, the key in the log", func(t *testing.T) {
		cfgPath := filepath.Join(w.dir, "bastion.yaml")
		data, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		// deploy/rbac lets bastion bind edit only.
		cfg := strings.Replace(string(data), "    credentials: none\n", "    credentials_cluster_role: view\n", 1)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		s3 := w.serve(t)
		out, errOut, code := w.ssh(t, s3, "alice", "alice-1", "", "--", "kubectl get pods")
		want := "your shell in " + w.project + " cannot be given its Kubernetes credentials; tell the operators"
		if code == 0 || !strings.Contains(errOut, want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("exit %d stdout %q stderr %q; want the one line %q", code, out, errOut, want)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(s3.logs(), "kube.pod.credentials_cluster_role") {
			if time.Now().After(deadline) {
				t.Fatalf("the log does not name kube.pod.credentials_cluster_role:\n%s", s3.logs())
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

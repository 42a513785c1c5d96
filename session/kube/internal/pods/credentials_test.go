package pods

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/bastion-ssh/bastion/config"
)

// foreignCredentials is a client of project tools on a fake clientset
// holding a ServiceAccount and a RoleBinding named as bastion's in
// namespace tool-other that bastion did not make.
func foreignCredentials(t *testing.T) (*Client, *fake.Clientset) {
	t.Helper()
	k := config.Default().Kube
	cl := NewCluster(&k, config.KubeCluster{Name: "tools"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	foreignSA := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "bastion-shell", Namespace: "tool-other"}}
	foreignRB := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bastion-shell", Namespace: "tool-other"},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "admin"}}
	cs := fake.NewClientset(foreignSA, foreignRB)
	cl.UseClient(cs)
	c, err := cl.Current()
	if err != nil {
		t.Fatal(err)
	}
	return c, cs
}

// The account's ServiceAccount and RoleBinding: made once (labelled, no
// automounted token), left alone when right, the RoleBinding made anew
// when the operator changed the ClusterRole; what bastion did not make is
// never taken over.
func TestEnsureCredentials(t *testing.T) {
	t.Parallel()
	c, cs := foreignCredentials(t)
	ctx := t.Context()
	for range 2 {
		if err := c.EnsureServiceAccount(ctx, "user-alice", "bastion-shell", false); err != nil {
			t.Fatal(err)
		}
		if err := c.EnsureRoleBinding(ctx, "user-alice", "bastion-shell", "bastion-shell", "edit", false); err != nil {
			t.Fatal(err)
		}
	}
	sa, err := cs.CoreV1().ServiceAccounts("user-alice").Get(ctx, "bastion-shell", metav1.GetOptions{})
	if err != nil || sa.Labels[LabelManagedBy] != ManagedBy || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount %+v, %v", sa, err)
	}
	rb, err := cs.RbacV1().RoleBindings("user-alice").Get(ctx, "bastion-shell", metav1.GetOptions{})
	if err != nil || rb.Labels[LabelManagedBy] != ManagedBy || rb.RoleRef.Kind != "ClusterRole" || rb.RoleRef.Name != "edit" ||
		len(rb.Subjects) != 1 || rb.Subjects[0] != (rbacv1.Subject{Kind: "ServiceAccount", Name: "bastion-shell", Namespace: "user-alice"}) {
		t.Errorf("RoleBinding %+v, %v", rb, err)
	}

	// The operator chose another ClusterRole: the binding is replaced.
	if err := c.EnsureRoleBinding(ctx, "user-alice", "bastion-shell", "bastion-shell", "view", false); err != nil {
		t.Fatal(err)
	}
	if rb, err := cs.RbacV1().RoleBindings("user-alice").Get(ctx, "bastion-shell", metav1.GetOptions{}); err != nil || rb.RoleRef.Name != "view" {
		t.Errorf("after a change of ClusterRole: %+v, %v", rb, err)
	}

	// Not bastion's: refused, and left as it was.
	if err := c.EnsureServiceAccount(ctx, "tool-other", "bastion-shell", false); err == nil || !strings.Contains(err.Error(), "not bastion's") {
		t.Errorf("a ServiceAccount bastion did not make: %v", err)
	}
	if err := c.EnsureRoleBinding(ctx, "tool-other", "bastion-shell", "bastion-shell", "edit", false); err == nil || !strings.Contains(err.Error(), "not bastion's") {
		t.Errorf("a RoleBinding bastion did not make: %v", err)
	}
	if rb, _ := cs.RbacV1().RoleBindings("tool-other").Get(ctx, "bastion-shell", metav1.GetOptions{}); rb.RoleRef.Name != "admin" {
		t.Errorf("a RoleBinding bastion did not make was changed: %+v", rb)
	}
}

// In a namespace made moments ago (fresh), the ServiceAccount and the
// RoleBinding are created without a look first: one request each. If one
// exists after all (another replica was first), it is checked as usual.
func TestEnsureCredentialsFresh(t *testing.T) {
	t.Parallel()
	c, cs := foreignCredentials(t)
	ctx := t.Context()
	if err := c.EnsureServiceAccount(ctx, "user-alice", "bastion-shell", true); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureRoleBinding(ctx, "user-alice", "bastion-shell", "bastion-shell", "edit", true); err != nil {
		t.Fatal(err)
	}
	var verbs []string
	for _, a := range cs.Actions() {
		verbs = append(verbs, a.GetVerb()+" "+a.GetResource().Resource)
	}
	if want := "create serviceaccounts,create rolebindings"; strings.Join(verbs, ",") != want {
		t.Errorf("requests %v, want %s", verbs, want)
	}
	if rb, err := cs.RbacV1().RoleBindings("user-alice").Get(ctx, "bastion-shell", metav1.GetOptions{}); err != nil || rb.RoleRef.Name != "edit" || rb.Labels[LabelManagedBy] != ManagedBy {
		t.Errorf("RoleBinding %+v, %v", rb, err)
	}

	// Already there after all, and not bastion's: refused as without fresh.
	if err := c.EnsureServiceAccount(ctx, "tool-other", "bastion-shell", true); err == nil || !strings.Contains(err.Error(), "not bastion's") {
		t.Errorf("a ServiceAccount bastion did not make: %v", err)
	}
	if err := c.EnsureRoleBinding(ctx, "tool-other", "bastion-shell", "bastion-shell", "edit", true); err == nil || !strings.Contains(err.Error(), "not bastion's") {
		t.Errorf("a RoleBinding bastion did not make: %v", err)
	}
}

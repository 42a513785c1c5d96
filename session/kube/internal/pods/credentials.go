package pods

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ServiceAccountObject is ServiceAccount name as bastion makes it in
// project's namespaces: labelled as bastion's, without an automounted
// token.
func ServiceAccountObject(project, name string) *corev1.ServiceAccount {
	no := false
	return &corev1.ServiceAccount{
		ObjectMeta:                   metav1.ObjectMeta{Name: name, Labels: labels(project)},
		AutomountServiceAccountToken: &no,
	}
}

// RoleBindingObject is RoleBinding name as bastion makes it in namespace
// ns of project: ServiceAccount ns/sa (only) bound to ClusterRole role.
func RoleBindingObject(project, ns, name, sa, role string) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels(project)},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
	}
}

// EnsureServiceAccount makes sure namespace ns has ServiceAccount name
// (ServiceAccountObject), creating it if it is missing (NotFound when the
// namespace itself is). One of that name that bastion did not make is an
// error: bastion never takes over what it did not create. In a namespace
// made moments ago (fresh) it creates without looking first.
func (c *Client) EnsureServiceAccount(ctx context.Context, ns, name string, fresh bool) error {
	ctx, cancel := c.queued(ctx)
	defer cancel()
	sas := c.start.CoreV1().ServiceAccounts(ns)
	var sa *corev1.ServiceAccount
	var err error = apierrors.NewNotFound(corev1.Resource("serviceaccounts"), name)
	if !fresh {
		sa, err = sas.Get(ctx, name, metav1.GetOptions{})
	}
	if apierrors.IsNotFound(err) {
		sa, err = sas.Create(ctx, ServiceAccountObject(c.Project(), name), metav1.CreateOptions{FieldManager: fieldManager})
		if err == nil {
			c.cluster.log.Info("created ServiceAccount", "namespace", ns, "name", name, "project", c.Project())
			return nil
		}
		if apierrors.IsAlreadyExists(err) {
			sa, err = sas.Get(ctx, name, metav1.GetOptions{}) // another session or replica made it
		}
	}
	if err != nil {
		return fmt.Errorf("ServiceAccount %s/%s: %w", ns, name, err)
	}
	if sa.Labels[LabelManagedBy] != ManagedBy {
		return fmt.Errorf("ServiceAccount %s/%s exists and is not bastion's (no %s=%s label); refusing to hand out its tokens", ns, name, LabelManagedBy, ManagedBy)
	}
	return nil
}

// EnsureRoleBinding makes sure namespace ns has RoleBinding name, binding
// ServiceAccount ns/sa (only) to ClusterRole role in that namespace
// (RoleBindingObject). A RoleBinding of bastion's that binds anything else
// (the operator changed the ClusterRole: a roleRef cannot be changed) is
// deleted and made anew; one that bastion did not make is an error. In a
// namespace made moments ago (fresh) it creates without looking first.
func (c *Client) EnsureRoleBinding(ctx context.Context, ns, name, sa, role string, fresh bool) error {
	want := RoleBindingObject(c.Project(), ns, name, sa, role)
	rbs := c.start.RbacV1().RoleBindings(ns)
	for attempt := 0; attempt < 3; attempt++ {
		cctx, cancel := c.queued(ctx)
		var rb *rbacv1.RoleBinding
		var err error = apierrors.NewNotFound(rbacv1.Resource("rolebindings"), name)
		if !fresh || attempt > 0 {
			rb, err = rbs.Get(cctx, name, metav1.GetOptions{})
		}
		switch {
		case apierrors.IsNotFound(err):
			_, err = rbs.Create(cctx, want, metav1.CreateOptions{FieldManager: fieldManager})
			cancel()
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("create RoleBinding %s/%s to ClusterRole %s: %w", ns, name, role, err)
			}
			c.cluster.log.Info("created RoleBinding", "namespace", ns, "name", name, "clusterrole", role, "project", c.Project())
			return nil
		case err != nil:
			cancel()
			return fmt.Errorf("RoleBinding %s/%s: %w", ns, name, err)
		case rb.Labels[LabelManagedBy] != ManagedBy:
			cancel()
			return fmt.Errorf("RoleBinding %s/%s exists and is not bastion's (no %s=%s label); refusing to change it", ns, name, LabelManagedBy, ManagedBy)
		case rb.RoleRef == want.RoleRef && len(rb.Subjects) == 1 && rb.Subjects[0] == want.Subjects[0]:
			cancel()
			return nil
		}
		// bastion's, binding something else: replace it (this version only).
		uid, rv := rb.UID, rb.ResourceVersion
		err = rbs.Delete(cctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		cancel()
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete RoleBinding %s/%s (to ClusterRole %s, now %s): %w", ns, name, rb.RoleRef.Name, role, err)
		}
		if err == nil {
			c.cluster.log.Info("deleted RoleBinding to replace it", "namespace", ns, "name", name, "clusterrole", rb.RoleRef.Name, "now", role)
		}
	}
	return fmt.Errorf("RoleBinding %s/%s: still changing after 3 attempts", ns, name)
}

// labels are what bastion puts on the objects it makes in project's
// cluster.
func labels(project string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedBy, LabelProject: project}
}

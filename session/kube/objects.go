package kube

import (
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// ShellObjects are what an account's first login in its project's
// cluster makes before its shell pod starts, as bastion makes them.
type ShellObjects struct {
	Namespace      *corev1.Namespace      // nil: the cluster's namespace.create is off
	ServiceAccount *corev1.ServiceAccount // nil: kube.pod.credentials is none
	RoleBinding    *rbacv1.RoleBinding    // nil: kube.pod.credentials is none
	Pod            *corev1.Pod            // without this replica's session annotation
}

// ShellObjects returns the objects the first login of user u, acting as
// acct, makes: the login storm benchmark (bench) creates the same with
// raw client-go as its floor.
func (b *Backend) ShellObjects(u *auth.User, acct auth.Account) (ShellObjects, error) {
	cl, id, err := b.resolve(session.Request{User: u, Account: acct})
	if err != nil {
		return ShellObjects{}, err
	}
	ns := namespaceFor(cl.Cfg, id)
	o := ShellObjects{Pod: podSpec(cl, id, ns)}
	if cl.Cfg.CreateNamespaces() {
		o.Namespace = pods.NamespaceObject(cl.Name(), ns)
	}
	if cl.Pod.Credentials == config.CredentialsServiceAccount {
		o.ServiceAccount = pods.ServiceAccountObject(cl.Name(), credentialsSA)
		o.RoleBinding = pods.RoleBindingObject(cl.Name(), ns, credentialsSA, credentialsSA, cl.Pod.CredentialsClusterRole)
	}
	return o, nil
}

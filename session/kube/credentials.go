package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// The account's own Kubernetes credentials in its shell
// (kube.pod.credentials: serviceaccount); doc.go says why they take this
// shape.
const (
	// credentialsSA is the ServiceAccount (and the RoleBinding) bastion
	// keeps in each account's namespace.
	credentialsSA = "bastion-shell"
	// credentialsDir holds the projected token, the cluster's CA, the
	// namespace and the kubeconfig; KUBECONFIG names credentialsDir/config.
	credentialsDir    = "/etc/bastion/kube"
	credentialsVolume = "kube-credentials"
	// rootCAConfigMap is the cluster's CA bundle, which the
	// kube-controller-manager publishes in every namespace.
	rootCAConfigMap = "kube-root-ca.crt"
)

// kubeconfig is the shell's kubeconfig: the API server as pods reach it,
// the cluster's CA and the projected token, both files the kubelet keeps
// current, and the account's namespace. Every value in it is checked
// (an https URL, DNS labels), so no quoting is needed.
func kubeconfig(server, project, ns string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[2]s
  cluster:
    server: %[1]s
    certificate-authority: %[4]s/ca.crt
users:
- name: %[5]s
  user:
    tokenFile: %[4]s/token
contexts:
- name: %[2]s
  context:
    cluster: %[2]s
    user: %[5]s
    namespace: %[3]s
current-context: %[2]s
`, server, project, ns, credentialsDir, credentialsSA)
}

// withCredentials gives pod (in namespace ns of project) the
// ServiceAccount's short-lived token, the CA, the namespace and a
// kubeconfig, in one read-only projected volume, and KUBECONFIG.
func withCredentials(pod *corev1.Pod, container *corev1.Container, p config.KubePod, project, ns string) {
	pod.Spec.ServiceAccountName = credentialsSA
	pod.Annotations[pods.AnnoKubeconfig] = kubeconfig(p.CredentialsAPIServer, project, ns)
	// In the spec hash: after a change of ClusterRole, a pod is replaced
	// once nobody uses it, and making its successor rebinds.
	pod.Annotations[pods.AnnoClusterRole] = p.CredentialsClusterRole
	lifetime := int64(p.CredentialsTokenLifetime.Seconds())
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: credentialsVolume, VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &lifetime}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: rootCAConfigMap},
				Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
			}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}},
				{Path: "config", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + pods.AnnoKubeconfig + "']"}},
			}}},
		}},
	}})
	container.VolumeMounts = append(container.VolumeMounts, corev1.VolumeMount{Name: credentialsVolume, MountPath: credentialsDir, ReadOnly: true})
	container.Env = append(container.Env, corev1.EnvVar{Name: "KUBECONFIG", Value: credentialsDir + "/config"})
}

// ensureCredentials makes the account's ServiceAccount and its
// RoleBinding in ns, before a pod that uses them is created; in a
// namespace made moments ago (fresh), without looking for them first.
func ensureCredentials(ctx context.Context, c *pods.Client, ns string, fresh bool) error {
	p := c.Cluster().Pod
	if p.Credentials != config.CredentialsServiceAccount {
		return nil
	}
	err := c.EnsureServiceAccount(ctx, ns, credentialsSA, fresh)
	if err == nil {
		err = c.EnsureRoleBinding(ctx, ns, credentialsSA, credentialsSA, p.CredentialsClusterRole, fresh)
	}
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("kube.pod.credentials is serviceaccount: bastion needs get and create on serviceaccounts, get, create and delete on rolebindings, and bind on ClusterRole %q (kube.pod.credentials_cluster_role) in cluster %s, as in deploy/rbac/bastion.yaml: %w",
			p.CredentialsClusterRole, c.Project(), err)
	}
	return err
}

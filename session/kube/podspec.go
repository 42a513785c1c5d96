package kube

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// sleeper is the shell container's main process: it does nothing, reaps
// the orphans of exec'd sessions (it is PID 1), and exits at once on
// SIGTERM so that a deleted pod goes away without waiting for the grace
// period.
const sleeper = `trap 'exit 0' TERM INT HUP; while :; do sleep 30 & wait $!; done`

// podSpec is acct's shell pod in cluster c, namespace ns, without the
// session annotation. The spec hash annotation covers everything else.
func podSpec(c *pods.Cluster, id identity, ns string) *corev1.Pod {
	return podSpecFrom(c, c.Pod, id, ns)
}

// probeSpec is the pod spec pre-flight probes an image with: the shell
// pod's, without the account's credentials (pre-flight makes no
// ServiceAccount).
func probeSpec(c *pods.Cluster, acct auth.Account, ns string) *corev1.Pod {
	p := c.Pod
	p.Credentials = config.CredentialsNone
	return podSpecFrom(c, p, identity{acct: acct, short: acct.Name, project: c.Name()}, ns)
}

// podSpecFrom is podSpec with the pod settings p.
func podSpecFrom(c *pods.Cluster, p config.KubePod, id identity, ns string) *corev1.Pod {
	acct := id.acct
	name := podName(c.Cfg.Name, acct.Name)
	labels := map[string]string{}
	maps.Copy(labels, p.Labels)
	maps.Copy(labels, map[string]string{
		pods.LabelManagedBy:   pods.ManagedBy,
		pods.LabelComponent:   pods.ComponentShell,
		pods.LabelProject:     c.Cfg.Name,
		pods.LabelAccount:     labelValue(acct.Name),
		pods.LabelAccountHash: hashOf(acct.Name, 16),
	})
	annotations := map[string]string{}
	maps.Copy(annotations, p.Annotations)
	annotations[pods.AnnoAccount] = acct.Name
	annotations[pods.AnnoUID] = strconv.Itoa(acct.UID)

	shell := acct.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	uid, gid := int64(acct.UID), int64(acct.GID)
	var groups []int64
	for _, g := range acct.GIDs {
		if g != acct.GID {
			groups = append(groups, int64(g))
		}
	}
	yes, no := true, false
	seccomp := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	onRootMismatch := corev1.FSGroupChangeOnRootMismatch
	grace := int64(p.TerminationGracePeriod.Seconds())
	readOnly := p.ReadOnlyRootFilesystem != nil && *p.ReadOnlyRootFilesystem

	container := corev1.Container{
		Name:            pods.Container,
		Image:           p.Image,
		ImagePullPolicy: corev1.PullPolicy(p.ImagePullPolicy),
		Command:         []string{"/bin/sh", "-c", sleeper},
		Env: []corev1.EnvVar{
			{Name: "HOME", Value: acct.Home},
			{Name: "USER", Value: acct.Name},
			{Name: "LOGNAME", Value: acct.Name},
			{Name: "SHELL", Value: shell},
		},
		Resources: resources(p),
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: &no,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			ReadOnlyRootFilesystem:   &readOnly,
			RunAsNonRoot:             &yes,
			SeccompProfile:           seccomp,
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	var volumes []corev1.Volume

	// /tmp (and /var/tmp, /run with a read-only root) on an emptyDir.
	tmp := corev1.EmptyDirVolumeSource{}
	if p.TmpSize != "" {
		q := resource.MustParse(p.TmpSize)
		tmp.SizeLimit = &q
	}
	volumes = append(volumes, corev1.Volume{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &tmp}})
	container.VolumeMounts = append(container.VolumeMounts, corev1.VolumeMount{Name: "tmp", MountPath: "/tmp", SubPath: "tmp"})
	if readOnly {
		container.VolumeMounts = append(container.VolumeMounts,
			corev1.VolumeMount{Name: "tmp", MountPath: "/var/tmp", SubPath: "var-tmp"},
			corev1.VolumeMount{Name: "tmp", MountPath: "/run", SubPath: "run"})
	}

	var initContainers []corev1.Container
	if p.HelperImage != "" {
		// bastion-helper, copied from bastion's image (which has no shell
		// or cp) into a small emptyDir the shell container reads.
		limit := resource.MustParse("32Mi")
		volumes = append(volumes, corev1.Volume{Name: helperVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &limit}}})
		initContainers = append(initContainers, corev1.Container{
			Name:                     helperVolume,
			Image:                    p.HelperImage,
			ImagePullPolicy:          corev1.PullPolicy(p.ImagePullPolicy),
			Command:                  []string{"/usr/local/bin/bastion-helper", "install", helperDir},
			Resources:                helperResources(container.Resources),
			SecurityContext:          container.SecurityContext,
			VolumeMounts:             []corev1.VolumeMount{{Name: helperVolume, MountPath: helperDir}},
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		})
		container.VolumeMounts = append(container.VolumeMounts,
			corev1.VolumeMount{Name: helperVolume, MountPath: helperDir, ReadOnly: true},
			// The helper is also `become` typed in the shell, on the PATH
			// every image's login profile keeps (/etc/profile resets PATH).
			corev1.VolumeMount{Name: helperVolume, MountPath: becomePath, SubPath: "bastion-helper", ReadOnly: true})
	}

	if p.Passwd == nil || *p.Passwd {
		annotations[pods.AnnoPasswd] = fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\n%s:x:%d:%d::%s:%s\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
			acct.Name, acct.UID, acct.GID, acct.Home, shell)
		annotations[pods.AnnoGroup] = fmt.Sprintf("root:x:0:\n%s:x:%d:\nnogroup:x:65534:\n", acct.Name, acct.GID)
		mode := int32(0o444)
		volumes = append(volumes, corev1.Volume{Name: "nss", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
			DefaultMode: &mode,
			Items: []corev1.DownwardAPIVolumeFile{
				{Path: "passwd", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + pods.AnnoPasswd + "']"}},
				{Path: "group", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + pods.AnnoGroup + "']"}},
			},
		}}})
		container.VolumeMounts = append(container.VolumeMounts,
			corev1.VolumeMount{Name: "nss", MountPath: "/etc/passwd", SubPath: "passwd", ReadOnly: true},
			corev1.VolumeMount{Name: "nss", MountPath: "/etc/group", SubPath: "group", ReadOnly: true})
	}

	if vs, ok := homeVolume(p.Home, id); ok && acct.Home != "" {
		volumes = append(volumes, corev1.Volume{Name: "home", VolumeSource: vs})
		container.VolumeMounts = append(container.VolumeMounts, corev1.VolumeMount{
			Name: "home", MountPath: acct.Home, SubPath: expandPath(p.Home.SubPath, id), ReadOnly: p.Home.ReadOnly,
		})
		container.WorkingDir = acct.Home
	}

	var tolerations []corev1.Toleration
	for _, t := range p.Tolerations {
		tolerations = append(tolerations, corev1.Toleration{
			Key: t.Key, Operator: corev1.TolerationOperator(t.Operator), Value: t.Value,
			Effect: corev1.TaintEffect(t.Effect), TolerationSeconds: t.Seconds,
		})
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser: &uid, RunAsGroup: &gid, FSGroup: &gid, FSGroupChangePolicy: &onRootMismatch,
				RunAsNonRoot: &yes, SupplementalGroups: groups, SeccompProfile: seccomp,
			},
			InitContainers:    initContainers,
			Containers:        []corev1.Container{container},
			Volumes:           volumes,
			PriorityClassName: p.PriorityClassName,
			NodeSelector:      p.NodeSelector,
			Tolerations:       tolerations,
		},
	}
	if p.Credentials == config.CredentialsServiceAccount {
		withCredentials(pod, &pod.Spec.Containers[0], p, c.Cfg.Name, ns)
	}
	pod.Annotations[pods.AnnoSpecHash] = specHash(pod)
	return pod
}

// specHash identifies what a pod was made from, so that a pod made from
// an older config (image, limits, credentials) is replaced once nobody
// uses it.
func specHash(pod *corev1.Pod) string {
	data, _ := json.Marshal(struct {
		Spec        corev1.PodSpec
		Annotations map[string]string
	}{pod.Spec, pod.Annotations})
	return hashOf(string(data), 16)
}

func resources(p config.KubePod) corev1.ResourceRequirements {
	r := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	set := func(l corev1.ResourceList, name corev1.ResourceName, v string) {
		if v != "" {
			l[name] = resource.MustParse(v)
		}
	}
	set(r.Requests, corev1.ResourceCPU, p.CPURequest)
	set(r.Requests, corev1.ResourceMemory, p.MemoryRequest)
	set(r.Limits, corev1.ResourceCPU, p.CPULimit)
	set(r.Limits, corev1.ResourceMemory, p.MemoryLimit)
	return r
}

// helperResources are the helper's init container's: what copying one
// binary needs (10m and 16Mi, limited to 100m and 32Mi), but never more
// than the shell container's own, so that the helper does not change the
// pod's effective requests and limits (the larger of its init
// containers' and its containers'): as many shells fit on a node, and
// in a quota, with it as without (a login storm of 200 pods with
// cpu_request 1m was refused "Insufficient cpu" by a 2-CPU node once the
// init container's 10m counted for each).
func helperResources(shell corev1.ResourceRequirements) corev1.ResourceRequirements {
	r := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if v, ok := shell.Requests[name]; ok && v.Cmp(r.Requests[name]) < 0 {
			r.Requests[name] = v
		}
		if v, ok := shell.Limits[name]; ok && v.Cmp(r.Limits[name]) < 0 {
			r.Limits[name] = v
		}
		if req, lim := r.Requests[name], r.Limits[name]; req.Cmp(lim) > 0 {
			r.Requests[name] = lim
		}
	}
	return r
}

// homeVolume is the home directory volume from the template.
func homeVolume(h config.KubeHome, id identity) (corev1.VolumeSource, bool) {
	switch h.Type {
	case "nfs":
		return corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{
			Server: h.Server, Path: expandPath(h.Path, id), ReadOnly: h.ReadOnly,
		}}, true
	case "pvc":
		return corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
			ClaimName: expandPath(h.Claim, id), ReadOnly: h.ReadOnly,
		}}, true
	case "hostPath":
		dir := corev1.HostPathDirectory
		return corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: expandPath(h.Path, id), Type: &dir}}, true
	}
	return corev1.VolumeSource{}, false
}

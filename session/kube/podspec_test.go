package kube

import (
	"bytes"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

func TestPodSpec(t *testing.T) {
	t.Parallel()
	k := config.Default().Kube
	k.Pod.Image = "registry.example/shell@sha256:0123"
	k.Pod.Home = config.KubeHome{Type: "nfs", Server: "nfs.example", Path: "/srv/homes/{account}"}
	k.Pod.NodeSelector = map[string]string{"pool": "shells"}
	k.Pod.Tolerations = []config.KubeToleration{{Key: "shells", Operator: "Exists", Effect: "NoSchedule"}}
	k.Pod.PriorityClassName = "interactive"
	c := config.KubeCluster{Name: "tools", Pod: config.KubePod{Home: config.KubeHome{Type: "pvc", Claim: "homes", SubPath: "{account}"}}}
	cl := pods.NewCluster(&k, c, nil)
	u := &auth.User{Account: auth.Account{Name: "alice", UID: 5001, GID: 500, Home: "/home/alice", Shell: "/bin/bash", GIDs: []int{500, 50380}}}
	pod := podSpec(cl, who(u, u.Account, "tools.", "tools"), "user-alice")

	s := pod.Spec
	if *s.AutomountServiceAccountToken || *s.SecurityContext.RunAsUser != 5001 || *s.SecurityContext.RunAsGroup != 500 ||
		*s.SecurityContext.FSGroup != 500 || !*s.SecurityContext.RunAsNonRoot || !slices.Equal(s.SecurityContext.SupplementalGroups, []int64{50380}) {
		t.Errorf("pod security context %+v", s.SecurityContext)
	}
	if s.PriorityClassName != "interactive" || s.NodeSelector["pool"] != "shells" || len(s.Tolerations) != 1 {
		t.Errorf("scheduling: %q %v %v", s.PriorityClassName, s.NodeSelector, s.Tolerations)
	}
	ctr := s.Containers[0]
	sc := ctr.SecurityContext
	if *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container security context %+v", sc)
	}
	if ctr.Image != k.Pod.Image || ctr.Resources.Limits.Memory().String() != "1Gi" || ctr.Resources.Limits.Cpu().String() != "300m" {
		t.Errorf("image %s resources %+v", ctr.Image, ctr.Resources)
	}
	env := map[string]string{}
	for _, e := range ctr.Env {
		env[e.Name] = e.Value
	}
	if env["HOME"] != "/home/alice" || env["USER"] != "alice" || env["LOGNAME"] != "alice" || env["SHELL"] != "/bin/bash" {
		t.Errorf("env %v", env)
	}
	var home *corev1.Volume
	for i := range s.Volumes {
		if s.Volumes[i].Name == "home" {
			home = &s.Volumes[i]
		}
	}
	if home == nil || home.PersistentVolumeClaim == nil || home.PersistentVolumeClaim.ClaimName != "homes" {
		t.Fatalf("home volume %+v: want the cluster's pvc over kube.pod's nfs", home)
	}
	mounted := false
	for _, m := range ctr.VolumeMounts {
		if m.Name == "home" && m.MountPath == "/home/alice" && m.SubPath == "alice" {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("home mounts %+v", ctr.VolumeMounts)
	}
	if !strings.Contains(pod.Annotations[pods.AnnoPasswd], "alice:x:5001:500::/home/alice:/bin/bash\n") {
		t.Errorf("passwd %q", pod.Annotations[pods.AnnoPasswd])
	}
	if pod.Labels[pods.LabelManagedBy] != pods.ManagedBy || pod.Labels[pods.LabelProject] != "tools" || pod.Annotations[pods.AnnoAccount] != "alice" {
		t.Errorf("labels %v annotations %v", pod.Labels, pod.Annotations)
	}
	if pod.Name != podName("tools", "alice") || pod.Namespace != "user-alice" {
		t.Errorf("name %s/%s", pod.Namespace, pod.Name)
	}
	golden(t, "testdata/podspec.golden.yaml", pod)
	// kube.pod.credentials: none makes the pod of before credentials
	// existed (this file is that golden file, hash included).
	none := k
	none.Pod.Credentials = "none"
	golden(t, "testdata/podspec-credentials-none.golden.yaml", podSpec(pods.NewCluster(&none, c, nil), who(u, u.Account, "tools.", "tools"), "user-alice"))
	// Same input, same hash; another image, another hash.
	if again := podSpec(cl, who(u, u.Account, "tools.", "tools"), "user-alice"); again.Annotations[pods.AnnoSpecHash] != pod.Annotations[pods.AnnoSpecHash] {
		t.Error("spec hash is not stable")
	}
	k.Pod.Image = "registry.example/shell@sha256:4567"
	if other := podSpec(pods.NewCluster(&k, c, nil), who(u, u.Account, "tools.", "tools"), "user-alice"); other.Annotations[pods.AnnoSpecHash] == pod.Annotations[pods.AnnoSpecHash] {
		t.Error("spec hash ignores the image")
	}
}

// TestPodSpecHelper: kube.pod.helper_image adds the init container that
// installs bastion-helper into an emptyDir the shell reads (read-only);
// without it the pod has neither, and sessions use the shell wrapper.
func TestPodSpecHelper(t *testing.T) {
	t.Parallel()
	k := config.Default().Kube
	k.Pod.Image = "registry.example/shell@sha256:0123"
	u := &auth.User{Account: auth.Account{Name: "alice", UID: 5001, GID: 500, Home: "/home/alice", Shell: "/bin/bash"}}

	plain := podSpec(pods.NewCluster(&k, config.KubeCluster{Name: "tools"}, nil), who(u, u.Account, "tools.", "tools"), "user-alice")
	if len(plain.Spec.InitContainers) != 0 || hasHelper(plain) {
		t.Errorf("no helper_image, but init containers %+v", plain.Spec.InitContainers)
	}

	k.Pod.HelperImage = "registry.example/bastion@sha256:4567"
	pod := podSpec(pods.NewCluster(&k, config.KubeCluster{Name: "tools"}, nil), who(u, u.Account, "tools.", "tools"), "user-alice")
	if !hasHelper(pod) || len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("init containers %+v", pod.Spec.InitContainers)
	}
	ic := pod.Spec.InitContainers[0]
	if ic.Image != k.Pod.HelperImage || !slices.Equal(ic.Command, []string{"/usr/local/bin/bastion-helper", "install", "/.bastion"}) ||
		len(ic.VolumeMounts) != 1 || ic.VolumeMounts[0].MountPath != "/.bastion" || ic.VolumeMounts[0].ReadOnly {
		t.Errorf("init container %+v", ic)
	}
	if ic.SecurityContext == nil || *ic.SecurityContext.AllowPrivilegeEscalation || !*ic.SecurityContext.RunAsNonRoot {
		t.Errorf("init container security context %+v", ic.SecurityContext)
	}
	found, become := false, false
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		if m.Name == helperVolume && m.SubPath == "" {
			found = m.MountPath == "/.bastion" && m.ReadOnly
		}
		if m.Name == helperVolume && m.SubPath != "" {
			become = m.MountPath == "/usr/local/bin/become" && m.SubPath == "bastion-helper" && m.ReadOnly
		}
	}
	if !found || !become {
		t.Errorf("shell container mounts %+v; want the helper volume read-only at /.bastion and its binary at /usr/local/bin/become", pod.Spec.Containers[0].VolumeMounts)
	}
	if pod.Annotations[pods.AnnoSpecHash] == plain.Annotations[pods.AnnoSpecHash] {
		t.Error("the spec hash ignores the helper: pods made without it would be kept")
	}
}

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares v, as YAML, with the golden file at path (rewritten
// with -update).
func golden(t *testing.T, path string, v any) {
	t.Helper()
	got, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to write it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the code makes now; if the change is meant, run go test -run %s -update and review the diff:\n%s", path, t.Name(), got)
	}
}

// TestPodSpecCredentials: kube.pod.credentials serviceaccount (the
// default) names the account's ServiceAccount, projects its token (short
// lived), the cluster's CA, the namespace and a kubeconfig that uses them
// into one read-only volume, and sets KUBECONFIG; the token is never
// automounted. none makes exactly the pod of before (same spec hash:
// pods made before credentials existed are kept).
func TestPodSpecCredentials(t *testing.T) {
	t.Parallel()
	k := config.Default().Kube
	k.Pod.Image = "registry.example/shell@sha256:0123"
	k.Pod.CredentialsTokenLifetime = 20 * time.Minute
	u := &auth.User{Account: auth.Account{Name: "alice", UID: 5001, GID: 500, Home: "/home/alice", Shell: "/bin/bash"}}
	c := config.KubeCluster{Name: "tools"}
	pod := podSpec(pods.NewCluster(&k, c, nil), who(u, u.Account, "tools.", "tools"), "user-alice")

	s := pod.Spec
	if s.ServiceAccountName != "bastion-shell" || s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		t.Errorf("serviceAccountName %q automount %v", s.ServiceAccountName, s.AutomountServiceAccountToken)
	}
	var vol *corev1.Volume
	for i := range s.Volumes {
		if s.Volumes[i].Name == "kube-credentials" {
			vol = &s.Volumes[i]
		}
	}
	if vol == nil || vol.Projected == nil || len(vol.Projected.Sources) != 3 {
		t.Fatalf("credentials volume %+v", vol)
	}
	src := vol.Projected.Sources
	if tok := src[0].ServiceAccountToken; tok == nil || tok.Path != "token" || tok.Audience != "" || *tok.ExpirationSeconds != 1200 {
		t.Errorf("token projection %+v", tok)
	}
	if cm := src[1].ConfigMap; cm == nil || cm.Name != "kube-root-ca.crt" || len(cm.Items) != 1 || cm.Items[0].Key != "ca.crt" {
		t.Errorf("CA projection %+v", cm)
	}
	ctr := s.Containers[0]
	mounted := false
	for _, m := range ctr.VolumeMounts {
		if m.Name == "kube-credentials" {
			mounted = m.MountPath == "/etc/bastion/kube" && m.ReadOnly
		}
	}
	if !mounted {
		t.Errorf("mounts %+v: want kube-credentials read-only at /etc/bastion/kube", ctr.VolumeMounts)
	}
	var env []string
	for _, e := range ctr.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	if !slices.Contains(env, "KUBECONFIG=/etc/bastion/kube/config") {
		t.Errorf("env %v", env)
	}
	kc, err := clientcmd.Load([]byte(pod.Annotations[pods.AnnoKubeconfig]))
	if err != nil {
		t.Fatalf("kubeconfig: %v\n%s", err, pod.Annotations[pods.AnnoKubeconfig])
	}
	ctx := kc.Contexts[kc.CurrentContext]
	if ctx == nil || ctx.Namespace != "user-alice" || kc.Clusters[ctx.Cluster] == nil || kc.AuthInfos[ctx.AuthInfo] == nil {
		t.Fatalf("kubeconfig context %+v", ctx)
	}
	if cl := kc.Clusters[ctx.Cluster]; cl.Server != "https://kubernetes.default.svc" || cl.CertificateAuthority != "/etc/bastion/kube/ca.crt" {
		t.Errorf("kubeconfig cluster %+v", cl)
	}
	if ai := kc.AuthInfos[ctx.AuthInfo]; ai.TokenFile != "/etc/bastion/kube/token" || ai.Token != "" || ai.ClientCertificate != "" {
		t.Errorf("kubeconfig user %+v", ai)
	}
	var downward []string
	for _, f := range src[2].DownwardAPI.Items {
		downward = append(downward, f.Path+"="+f.FieldRef.FieldPath)
	}
	if !slices.Equal(downward, []string{"namespace=metadata.namespace", "config=metadata.annotations['bastion.io/kubeconfig']"}) {
		t.Errorf("downward API items %v", downward)
	}

	// The cluster's own API server URL, and the hash follows it.
	c.Pod.CredentialsAPIServer = "https://10.96.0.1:443"
	other := podSpec(pods.NewCluster(&k, c, nil), who(u, u.Account, "tools.", "tools"), "user-alice")
	if !strings.Contains(other.Annotations[pods.AnnoKubeconfig], "server: https://10.96.0.1:443\n") ||
		other.Annotations[pods.AnnoSpecHash] == pod.Annotations[pods.AnnoSpecHash] {
		t.Errorf("credentials_api_server: kubeconfig\n%s", other.Annotations[pods.AnnoKubeconfig])
	}

	// Another ClusterRole: another hash, so that the pod is replaced (and
	// its successor rebinds) once nobody uses it.
	k2 := k
	k2.Pod.CredentialsClusterRole = "view"
	if viewer := podSpec(pods.NewCluster(&k2, config.KubeCluster{Name: "tools"}, nil), who(u, u.Account, "tools.", "tools"), "user-alice"); viewer.Annotations[pods.AnnoSpecHash] == pod.Annotations[pods.AnnoSpecHash] ||
		viewer.Annotations[pods.AnnoClusterRole] != "view" {
		t.Errorf("the spec hash ignores credentials_cluster_role: annotations %v", viewer.Annotations)
	}

	// Pre-flight probes run without credentials: it makes no
	// ServiceAccount in its namespace.
	probe := probeSpec(pods.NewCluster(&k, c, nil), u.Account, "user-alice")
	if probe.Spec.ServiceAccountName != "" || probe.Annotations[pods.AnnoKubeconfig] != "" || len(probe.Spec.Volumes) != len(pod.Spec.Volumes)-1 {
		t.Errorf("probe pod: serviceAccountName %q, %d volumes (the shell pod has %d)", probe.Spec.ServiceAccountName, len(probe.Spec.Volumes), len(pod.Spec.Volumes))
	}

	// none: no ServiceAccount, no volume, no KUBECONFIG: the pod of
	// before, byte for byte.
	c.Pod.Credentials = "none"
	none := podSpec(pods.NewCluster(&k, c, nil), who(u, u.Account, "tools.", "tools"), "user-alice")
	if none.Spec.ServiceAccountName != "" || *none.Spec.AutomountServiceAccountToken || none.Annotations[pods.AnnoKubeconfig] != "" {
		t.Errorf("credentials none: serviceAccountName %q automount %v kubeconfig %q", none.Spec.ServiceAccountName,
			*none.Spec.AutomountServiceAccountToken, none.Annotations[pods.AnnoKubeconfig])
	}
	for _, v := range none.Spec.Volumes {
		if v.Projected != nil {
			t.Errorf("credentials none: volume %+v", v)
		}
	}
	for _, e := range none.Spec.Containers[0].Env {
		if e.Name == "KUBECONFIG" {
			t.Errorf("credentials none: env %+v", e)
		}
	}
}

// The helper's init container never asks for more than the shell
// container, so it does not change how many shells fit on a node.
func TestHelperResources(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name               string
		shellReq, shellLim [2]string // cpu, memory ("" unset)
		wantReq, wantLim   [2]string
	}{
		{"defaults (100m, 256Mi requested)", [2]string{"100m", "256Mi"}, [2]string{"300m", "1Gi"}, [2]string{"10m", "16Mi"}, [2]string{"100m", "32Mi"}},
		{"a tiny shell", [2]string{"1m", "8Mi"}, [2]string{"1", "256Mi"}, [2]string{"1m", "8Mi"}, [2]string{"100m", "32Mi"}},
		{"limits under the helper's requests", [2]string{"", ""}, [2]string{"5m", "12Mi"}, [2]string{"5m", "12Mi"}, [2]string{"5m", "12Mi"}},
		{"nothing set", [2]string{"", ""}, [2]string{"", ""}, [2]string{"10m", "16Mi"}, [2]string{"100m", "32Mi"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			list := func(v [2]string) corev1.ResourceList {
				l := corev1.ResourceList{}
				for i, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if v[i] != "" {
						l[name] = resource.MustParse(v[i])
					}
				}
				return l
			}
			got := helperResources(corev1.ResourceRequirements{Requests: list(tt.shellReq), Limits: list(tt.shellLim)})
			for i, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q := got.Requests[name]; q.Cmp(resource.MustParse(tt.wantReq[i])) != 0 {
					t.Errorf("request %s = %s, want %s", name, q.String(), tt.wantReq[i])
				}
				if q := got.Limits[name]; q.Cmp(resource.MustParse(tt.wantLim[i])) != 0 {
					t.Errorf("limit %s = %s, want %s", name, q.String(), tt.wantLim[i])
				}
			}
		})
	}
}

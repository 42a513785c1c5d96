package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/integration/kubetest"
)

// The deploy/ tests: the kustomize manifests render and say what
// docs/operations.md promises, the Prometheus rules are well-formed and
// name real metrics, the real test cluster's API server accepts the
// rendered manifests (server-side dry run, and Pod Security "restricted"
// for the bastion's pod), and deploy/rbac's ServiceAccount, with a real
// token, can do exactly what the kube backend needs and nothing more.

const (
	deployOverlay    = "../deploy/overlays/example"
	deploySecrets    = "../deploy/overlays/example/secrets"
	deployRBAC       = "../deploy/rbac/bastion.yaml"
	deployRules      = "../deploy/prometheus/rules.yaml"
	deployRulesTest  = "../deploy/prometheus/rules_test.yaml"
	deployPreStopMin = 1 // seconds
)

var depDigestRef = regexp.MustCompile(`^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+@sha256:[0-9a-f]{64}$`)

// TestDeployManifests renders deploy/overlays/example and checks what the
// operator's guide relies on. It needs kubectl (for kustomize) but no
// cluster.
func TestDeployManifests(t *testing.T) {
	if testing.Short() {
		t.Skip("deploy test: renders with kubectl kustomize; skipped with -short")
	}
	render := depRenderKubectl(t)
	m := depParse(t, depKustomize(t, render, deployOverlay))
	base := depParse(t, depKustomize(t, render, "../deploy/base"))

	d := m.deployment(t, "bastion")
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	cfgText := m.configMap(t, "bastion-config").Data["config.yaml"]
	cfg, err := config.Parse([]byte(cfgText))
	if err != nil {
		t.Fatalf("ConfigMap bastion-config config.yaml: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("ConfigMap bastion-config config.yaml does not validate:\n%v", err)
	}

	t.Run("replicas and anti-affinity", func(t *testing.T) {
		if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
			t.Errorf("replicas = %v, want at least 2", d.Spec.Replicas)
		}
		aa := spec.Affinity
		if aa == nil || aa.PodAntiAffinity == nil ||
			len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution)+len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
			t.Fatal("no pod anti-affinity")
		}
		for _, term := range aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
			if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("anti-affinity selector %v does not select the bastion's own pods", term.LabelSelector)
			}
		}
		if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
			t.Errorf("rolling update may take a replica down before its successor is ready: %+v", d.Spec.Strategy.RollingUpdate)
		}
	})

	t.Run("probes on the ops port", func(t *testing.T) {
		host, port := depHostPort(t, "ops.listen", cfg.Ops.Listen)
		if host != "" && host != "0.0.0.0" && host != "::" {
			t.Errorf("ops.listen %q: the kubelet probes the pod IP, so it must listen on all addresses", cfg.Ops.Listen)
		}
		if got := depContainerPort(t, c, "ops"); got != port {
			t.Errorf("container port ops = %d, ops.listen port = %d", got, port)
		}
		for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("no HTTP %s probe", name)
				continue
			}
			want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[name]
			if p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "ops" {
				t.Errorf("%s probe = %s on port %s, want %s on ops", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), want)
			}
		}
	})

	t.Run("drain: preStop and grace period", func(t *testing.T) {
		ps := c.Lifecycle
		if ps == nil || ps.PreStop == nil || ps.PreStop.Sleep == nil || ps.PreStop.Sleep.Seconds < deployPreStopMin {
			t.Fatalf("no preStop sleep: %+v", ps)
		}
		pre := time.Duration(ps.PreStop.Sleep.Seconds) * time.Second
		grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
		need := pre + cfg.Limits.ShutdownGrace + 5*time.Second
		if grace < need {
			t.Errorf("terminationGracePeriodSeconds %s < preStop %s + limits.shutdown_grace %s + 5s: the kubelet would kill sessions mid-drain", grace, pre, cfg.Limits.ShutdownGrace)
		}
		if grace > need+time.Minute {
			t.Errorf("terminationGracePeriodSeconds %s is far above preStop + limits.shutdown_grace (%s): keep them in step", grace, need)
		}
	})

	t.Run("security context", func(t *testing.T) {
		psc, sc := spec.SecurityContext, c.SecurityContext
		if psc == nil || sc == nil {
			t.Fatal("no security context")
		}
		if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Error("pod does not run as a non-root user")
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Error("root filesystem is writable")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Error("privilege escalation allowed")
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			t.Errorf("capabilities = %+v, want drop [ALL] and no add", sc.Capabilities)
		}
		if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Error("seccomp is not RuntimeDefault")
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("resource requests = %v", c.Resources.Requests)
		}
		_, sshPort := depHostPort(t, "ssh.listen", cfg.SSH.Listen)
		if sshPort < 1024 {
			t.Errorf("ssh.listen port %d: a non-root process without capabilities cannot bind it", sshPort)
		}
		if got := depContainerPort(t, c, "ssh"); got != sshPort {
			t.Errorf("container port ssh = %d, ssh.listen port = %d", got, sshPort)
		}
	})

	t.Run("images pinned by digest", func(t *testing.T) {
		if !depDigestRef.MatchString(c.Image) {
			t.Errorf("bastion image %q is not pinned by digest", c.Image)
		}
		if baseImg := base.deployment(t, "bastion").Spec.Template.Spec.Containers[0].Image; baseImg == c.Image {
			t.Errorf("the overlay's images: did not change the base's image %q", baseImg)
		}
		if !depDigestRef.MatchString(cfg.Kube.Pod.Image) {
			t.Errorf("shell image kube.pod.image %q is not pinned by digest", cfg.Kube.Pod.Image)
		}
	})

	t.Run("config paths are the mounts", func(t *testing.T) {
		mounts := map[string]corev1.VolumeMount{}
		for _, vm := range c.VolumeMounts {
			mounts[vm.Name] = vm
		}
		vols := map[string]corev1.Volume{}
		for _, v := range spec.Volumes {
			vols[v.Name] = v
		}
		under := func(key, path, volume string) {
			t.Helper()
			vm, ok := mounts[volume]
			if !ok {
				t.Errorf("%s: no volume mount %q", key, volume)
				return
			}
			if path != vm.MountPath && !strings.HasPrefix(path, vm.MountPath+"/") {
				t.Errorf("%s = %s is not under the %s mount %s", key, path, volume, vm.MountPath)
			}
		}
		// Each of these must be a whole-directory mount: the kubelet never
		// updates a subPath mount, and reloads watch the directory.
		for _, name := range []string{"config", "host-keys", "ldap", "kubeconfigs"} {
			if vm, ok := mounts[name]; !ok || vm.SubPath != "" || vm.SubPathExpr != "" {
				t.Errorf("volume %s: want a whole-directory mount, got %+v", name, vm)
			}
		}
		under("config file", "/etc/bastion/config/config.yaml", "config")
		if want := []string{"serve", "--config", "/etc/bastion/config/config.yaml"}; !slices.Equal(c.Args, want) {
			t.Errorf("args = %q, want %q", c.Args, want)
		}
		keyNames := m.secretKeysFromGenerator(t, "bastion-host-keys")
		for i, k := range cfg.SSH.HostKeys {
			under(fmt.Sprintf("ssh.host_keys[%d]", i), k, "host-keys")
			if !slices.Contains(keyNames, filepath.Base(k)) {
				t.Errorf("ssh.host_keys[%d] = %s: the secrets kustomization makes no key %s (it makes %v)", i, k, filepath.Base(k), keyNames)
			}
		}
		if s := vols["host-keys"].Secret; s == nil || s.SecretName != "bastion-host-keys" || (s.Optional != nil && *s.Optional) {
			t.Errorf("host-keys volume = %+v, want the required Secret bastion-host-keys", vols["host-keys"])
		}
		ldapNames := m.secretKeysFromGenerator(t, "bastion-ldap")
		for key, p := range map[string]string{"ldap.ca_file": cfg.LDAP.CAFile, "ldap.bind_password_file": cfg.LDAP.BindPasswordFile} {
			under(key, p, "ldap")
			if !slices.Contains(ldapNames, filepath.Base(p)) {
				t.Errorf("%s = %s: the secrets kustomization makes no key %s", key, p, filepath.Base(p))
			}
		}
		under("ldap.kill_switch_file", cfg.LDAP.KillSwitchFile, "config")
		under("recording.dir", cfg.Recording.Dir, "recordings")
		if vols["recordings"].PersistentVolumeClaim == nil {
			t.Errorf("recordings volume = %+v: the example overlay keeps recordings on a PVC", vols["recordings"])
		} else if _, ok := m.byKind["PersistentVolumeClaim"][vols["recordings"].PersistentVolumeClaim.ClaimName]; !ok {
			t.Errorf("recordings PVC %s is not in the overlay", vols["recordings"].PersistentVolumeClaim.ClaimName)
		}
		cm := m.configMap(t, "bastion-config")
		for _, cl := range cfg.Kube.Clusters {
			p := cl.Kubeconfig
			if !filepath.IsAbs(p) {
				if _, ok := cm.Data[p]; !ok {
					t.Errorf("cluster %s: kubeconfig %s is relative to the config file but not in the ConfigMap", cl.Name, p)
				}
				if _, err := clientcmd.Load([]byte(cm.Data[p])); err != nil {
					t.Errorf("cluster %s: kubeconfig %s: %v", cl.Name, p, err)
				}
				continue
			}
			under(fmt.Sprintf("kube cluster %s kubeconfig", cl.Name), p, "kubeconfigs")
		}
	})

	t.Run("service, PDB, NetworkPolicy select the pods", func(t *testing.T) {
		podLabels := labels.Set(d.Spec.Template.Labels)
		svc := m.get(t, "Service", "bastion").(*corev1.Service)
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			t.Errorf("Service type = %s", svc.Spec.Type)
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			t.Errorf("Service selector %v does not select the pods", svc.Spec.Selector)
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 22 || svc.Spec.Ports[0].TargetPort.String() != "ssh" {
			t.Errorf("Service ports = %+v, want 22 → ssh", svc.Spec.Ports)
		}
		pdb := m.get(t, "PodDisruptionBudget", "bastion").(*policyv1.PodDisruptionBudget)
		if sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || !sel.Matches(podLabels) {
			t.Errorf("PDB selector %v does not select the pods", pdb.Spec.Selector)
		}
		if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
			t.Error("PDB sets neither maxUnavailable nor minAvailable")
		}
		np := m.get(t, "NetworkPolicy", "bastion").(*networkingv1.NetworkPolicy)
		if sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil || !sel.Matches(podLabels) {
			t.Errorf("NetworkPolicy selector %v does not select the pods", np.Spec.PodSelector)
		}
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			t.Error("NetworkPolicy does not limit egress")
		}
		ports := map[int]bool{}
		for _, r := range np.Spec.Egress {
			if len(r.To) == 0 {
				t.Errorf("egress rule to anywhere: %+v", r)
			}
			for _, p := range r.Ports {
				ports[p.Port.IntValue()] = true
			}
		}
		want := []int{53, 636, 6443}
		for _, rule := range cfg.Forwarding.Allow {
			i := strings.LastIndex(rule, ":")
			if n, err := strconv.Atoi(rule[i+1:]); err == nil {
				want = append(want, n)
			}
		}
		for _, p := range want {
			if !ports[p] {
				t.Errorf("NetworkPolicy allows no egress to port %d (DNS, LDAP, API server, forwarding.allow)", p)
			}
		}
	})

	t.Run("ServiceAccount is deploy/rbac's", func(t *testing.T) {
		data, err := os.ReadFile(deployRBAC)
		if err != nil {
			t.Fatal(err)
		}
		rb := depParse(t, string(data))
		sa := m.get(t, "ServiceAccount", spec.ServiceAccountName).(*corev1.ServiceAccount)
		want, ok := rb.byKind["ServiceAccount"][spec.ServiceAccountName].(*corev1.ServiceAccount)
		if !ok {
			t.Fatalf("%s has no ServiceAccount %s, which the Deployment runs as", deployRBAC, spec.ServiceAccountName)
		}
		if !depEqualPtr(sa.AutomountServiceAccountToken, want.AutomountServiceAccountToken) || !maps.Equal(sa.Labels, want.Labels) {
			t.Errorf("ServiceAccount %s differs from %s's (automount %v/%v, labels %v/%v): applying one would change the other",
				sa.Name, deployRBAC, sa.AutomountServiceAccountToken, want.AutomountServiceAccountToken, sa.Labels, want.Labels)
		}
		if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
			t.Error("the pod does not mount its ServiceAccount token, which in-cluster.kubeconfig uses")
		}
	})

	t.Run("config and secrets without a hash suffix", func(t *testing.T) {
		// A hashed name would restart every replica on each change, which
		// is what the reload on the ..data swap exists to avoid.
		if _, ok := m.byKind["ConfigMap"]["bastion-config"]; !ok {
			t.Errorf("ConfigMaps = %v, want bastion-config with no hash suffix", depKeys(m.byKind["ConfigMap"]))
		}
		for _, kind := range []string{"Secret"} {
			if len(m.byKind[kind]) > 0 {
				t.Errorf("the overlay renders %s %v: secrets must come only from deploy/overlays/example/secrets", kind, depKeys(m.byKind[kind]))
			}
		}
	})
}

// TestDeployPrometheusRules checks the rules file's shape and that every
// bastion_ metric it names exists; with promtool installed (Debian's
// prometheus package), it runs promtool check rules and the rule tests.
func TestDeployPrometheusRules(t *testing.T) {
	if testing.Short() {
		t.Skip("deploy test: skipped with -short")
	}
	data, err := os.ReadFile(deployRules)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Record      string            `yaml:"record"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("%s: %v", deployRules, err)
	}
	known := depBastionMetrics(t)
	alerts := map[string]bool{}
	used := regexp.MustCompile(`\bbastion_[a-z_]+`)
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("group %s: a rule without alert or expr: %+v", g.Name, r)
				continue
			}
			if alerts[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = true
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("alert %s: severity %q", r.Alert, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("alert %s: no summary", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			for _, name := range used.FindAllString(r.Expr, -1) {
				if !known[name] {
					t.Errorf("alert %s uses %s, which bastion does not export (ops/metrics.go)", r.Alert, name)
				}
			}
		}
	}
	// The alerts the operator's guide promises.
	for _, a := range []string{
		"BastionNoReadyReplicas", "BastionImageMissing", "BastionShellImageUnavailable",
		"BastionShellPodStartFailures", "BastionLDAPErrors", "BastionLDAPDown",
		"BastionSessionsNearLimit", "BastionRecordingErrors", "BastionReloadRejected",
	} {
		if !alerts[a] {
			t.Errorf("no alert %s", a)
		}
	}
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for a := range alerts {
		if !bytes.Contains(doc, []byte(a)) {
			t.Errorf("docs/operations.md does not mention alert %s", a)
		}
	}
	for name := range known {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if !bytes.Contains(doc, []byte(base)) {
			t.Errorf("docs/operations.md does not describe metric %s", base)
		}
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool is not installed (apt-get install prometheus): checked the rules' shape only")
		return
	}
	for _, args := range [][]string{{"check", "rules", deployRules}, {"test", "rules", deployRulesTest}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
}

// bastionMetrics lists the metric names bastion exports, from the
// constructors in ops/metrics.go (a vector with no series yet is not in a
// scrape), with a histogram's _bucket, _sum and _count.
func depBastionMetrics(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile("../ops/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(counterVec|gaugeVec|histogramVec)\(\s*"([a-z_]+)"`)
	names := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		n := "bastion_" + m[2]
		names[n] = true
		if m[1] == "histogramVec" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[n+s] = true
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metrics in ops/metrics.go: the constructor names changed?", len(names))
	}
	return names
}

// TestDeployServerDryRun gives the rendered manifests to the real test
// cluster's API server: a server-side dry run of the overlay and of the
// secrets kustomization (with keys from ssh-keygen), and Pod Security
// "restricted" enforced on the bastion's pod.
func TestDeployServerDryRun(t *testing.T) {
	k := newDeployCluster(t)
	t.Parallel()
	ns := kubetest.Namespace(t, k.client)

	// The overlay, moved into the test's namespace.
	rendered := depKustomize(t, k.render, deployWrap(t, ns, deployOverlay, ""))
	out := k.admin(t, rendered, "apply", "--dry-run=server", "-f", "-")
	m := depParse(t, rendered)
	for _, obj := range m.all {
		kind := strings.ToLower(obj.GetObjectKind().GroupVersionKind().Kind)
		name := obj.(metav1.Object).GetName()
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(kind) + `[^ ]*/` + regexp.QuoteMeta(name) + ` .*\(server dry run\)$`).MatchString(out) {
			t.Errorf("kubectl apply --dry-run=server did not report %s/%s:\n%s", kind, name, out)
		}
	}
	t.Logf("kubectl apply --dry-run=server (overlay):\n%s", out)

	// The secrets kustomization with real keys.
	dir := t.TempDir()
	kz, err := os.ReadFile(filepath.Join(deploySecrets, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	depWriteFile(t, filepath.Join(dir, "kustomization.yaml"), string(kz))
	for _, typ := range []string{"ed25519", "rsa"} {
		args := []string{"-q", "-t", typ, "-N", "", "-C", "bastion", "-f", filepath.Join(dir, "ssh_host_"+typ+"_key")}
		if typ == "rsa" {
			args = append(args, "-b", "3072")
		}
		if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	depWriteFile(t, filepath.Join(dir, "ca.crt"), "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n")
	depWriteFile(t, filepath.Join(dir, "bind-password"), "not-a-real-password\n")
	secrets := depKustomize(t, k.render, deployWrap(t, ns, dir, ""))
	out = k.admin(t, secrets, "apply", "--server-side", "--dry-run=server", "-f", "-")
	for _, s := range []string{"secret/bastion-host-keys", "secret/bastion-ldap"} {
		if !strings.Contains(out, s) {
			t.Errorf("secrets dry run did not report %s:\n%s", s, out)
		}
	}
	t.Logf("kubectl apply --server-side --dry-run=server (secrets):\n%s", out)

	// The config with those files where the Deployment mounts them: the
	// real bastion accepts it (host keys load, every key validates).
	root := t.TempDir()
	cfgText := m.configMap(t, "bastion-config").Data["config.yaml"]
	cfgText = strings.ReplaceAll(cfgText, "/etc/bastion/", root+"/")
	for sub, files := range map[string][]string{
		"host-keys": {"ssh_host_ed25519_key", "ssh_host_rsa_key"},
		"ldap":      {"ca.crt", "bind-password"},
	} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			data, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, sub, f), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "config"), 0o700); err != nil {
		t.Fatal(err)
	}
	depWriteFile(t, filepath.Join(root, "config", "config.yaml"), cfgText)
	depWriteFile(t, filepath.Join(root, "config", "in-cluster.kubeconfig"), m.configMap(t, "bastion-config").Data["in-cluster.kubeconfig"])
	check := exec.Command(bastionBinary(t), "check-config", "--config", filepath.Join(root, "config", "config.yaml"))
	if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(out), "config ok") {
		t.Errorf("bastion check-config of the ConfigMap's config with the secrets' files: %v\n%s", err, out)
	}

	// Pod Security "restricted", enforced for real on the test namespace:
	// the bastion's pod template passes, and a control that breaks it is
	// refused (so the check is real).
	k.admin(t, "", "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")
	d := m.deployment(t, "bastion")
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "bastion-psa-check", Namespace: ns, Labels: d.Spec.Template.Labels},
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
	}
	// The ServiceAccount is not created by the dry run above; Pod Security
	// does not look at it.
	pod.Spec.ServiceAccountName = "default"
	out = k.admin(t, depYAML(t, pod), "create", "--dry-run=server", "-f", "-")
	t.Logf("bastion pod under Pod Security restricted: %s", strings.TrimSpace(out))
	bad := pod.DeepCopy()
	bad.Spec.Containers[0].SecurityContext.Capabilities = nil
	bad.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
	if out, err := k.kubectl(t, k.server, k.adminConfig, depYAML(t, bad), "create", "--dry-run=server", "-f", "-"); err == nil || !strings.Contains(out, "violates PodSecurity") {
		t.Errorf("control: a pod with capabilities and privilege escalation allowed was not refused by Pod Security: %v\n%s", err, out)
	}
}

// TestDeployConfigInPod runs the bastion binary (built as deploy/Dockerfile
// builds it) in a pod with the Deployment's own pod spec: its security
// context (non-root user, fsGroup, read-only root), its ConfigMap and its
// Secrets mounted as the kubelet mounts them. `bastion check-config` there
// proves the config, the host keys and the LDAP files are readable and
// accepted as deployed. Only the image differs: the test shell image, with
// the binary mounted from this machine (the cluster's only node).
func TestDeployConfigInPod(t *testing.T) {
	k := newDeployCluster(t)
	t.Parallel()
	ns := kubetest.Namespace(t, k.client)

	bin := filepath.Join(t.TempDir(), "bastion")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/bastion")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build (static, as deploy/Dockerfile): %v\n%s", err, out)
	}
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}

	// The ConfigMap and the Secrets, for real, in the test's namespace.
	m := depParse(t, depKustomize(t, k.render, deployWrap(t, ns, deployOverlay, "")))
	k.admin(t, depYAML(t, m.configMap(t, "bastion-config")), "apply", "-f", "-")
	secrets := t.TempDir()
	kz, err := os.ReadFile(filepath.Join(deploySecrets, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	depWriteFile(t, filepath.Join(secrets, "kustomization.yaml"), string(kz))
	for _, typ := range []string{"ed25519", "rsa"} {
		args := []string{"-q", "-t", typ, "-N", "", "-C", "bastion", "-f", filepath.Join(secrets, "ssh_host_"+typ+"_key")}
		if typ == "rsa" {
			args = append(args, "-b", "3072")
		}
		if out, err := exec.Command("ssh-keygen", args...).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	depWriteFile(t, filepath.Join(secrets, "ca.crt"), "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n")
	depWriteFile(t, filepath.Join(secrets, "bind-password"), "not-a-real-password\n")
	k.admin(t, depKustomize(t, k.render, deployWrap(t, ns, secrets, "")), "apply", "--server-side", "-f", "-")

	d := m.deployment(t, "bastion")
	spec := d.Spec.Template.Spec.DeepCopy()
	spec.RestartPolicy = corev1.RestartPolicyNever
	spec.ServiceAccountName = "default"
	spec.Affinity, spec.TopologySpreadConstraints = nil, nil
	for i, v := range spec.Volumes {
		if v.PersistentVolumeClaim != nil { // the recordings volume: no storage here
			spec.Volumes[i].VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
		}
	}
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "bastion-binary", VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: bin, Type: depPtr(corev1.HostPathFile)},
	}})
	c := &spec.Containers[0]
	c.Image, c.ImagePullPolicy = kubetest.ShellImage, corev1.PullNever
	c.Command = []string{"/opt/bastion"}
	c.Args = []string{"check-config", "--config", "/etc/bastion/config/config.yaml"}
	c.StartupProbe, c.ReadinessProbe, c.LivenessProbe, c.Lifecycle = nil, nil, nil, nil
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "bastion-binary", MountPath: "/opt/bastion", ReadOnly: true})
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "bastion-check-config", Namespace: ns},
		Spec:       *spec,
	}
	k.admin(t, depYAML(t, pod), "create", "-f", "-")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	done, err := kubetest.WaitForPod(ctx, k.client, ns, pod.Name, func(p *corev1.Pod) (bool, error) {
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := k.admin(t, "", "logs", "-n", ns, pod.Name)
	files := k.admin(t, "", "get", "pod", "-n", ns, pod.Name, "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}")
	t.Logf("bastion check-config in the deployed pod (exit %s):\n%s", files, logs)
	if done.Status.Phase == corev1.PodSucceeded && strings.Contains(logs, "config ok") {
		return
	}
	t.Fatalf("bastion check-config refused the deployed config, Secrets and mounts:\n%s", logs)
}

// TestDeployRBAC binds deploy/rbac's roles to a ServiceAccount for real,
// mints a token for it, and checks with that token what it can and cannot
// do, then does the kube backend's real operations with it (create, watch,
// exec, port-forward, annotate, delete a pod).
func TestDeployRBAC(t *testing.T) {
	k := newDeployCluster(t)
	t.Parallel()
	ns := kubetest.Namespace(t, k.client)
	suffix := "-" + ns

	// deploy/rbac's objects, in the test's namespace and with names of
	// their own (the ClusterRole and its binding are cluster-wide).
	dir := t.TempDir()
	data, err := os.ReadFile(deployRBAC)
	if err != nil {
		t.Fatal(err)
	}
	depWriteFile(t, filepath.Join(dir, "bastion.yaml"), string(data))
	depWriteFile(t, filepath.Join(dir, "kustomization.yaml"), "resources: [bastion.yaml]\n")
	rendered := depParse(t, depKustomize(t, k.render, deployWrap(t, ns, dir, suffix)))
	var apply []runtime.Object
	var sa string
	namespaced := true
	for _, obj := range rendered.all {
		switch o := obj.(type) {
		case *corev1.Namespace:
			continue // the test's own namespace
		case *corev1.ServiceAccount:
			sa = o.Name
		case *rbacv1.ClusterRoleBinding:
			namespaced = false
		}
		apply = append(apply, obj)
	}
	if sa == "" {
		t.Fatalf("%s has no ServiceAccount", deployRBAC)
	}
	var docs []string
	for _, obj := range apply {
		docs = append(docs, depYAML(t, obj))
	}
	t.Cleanup(func() {
		// The namespaced objects go with the namespace; the cluster-wide ones
		// are deleted here.
		for _, obj := range apply {
			switch obj.(type) {
			case *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
				if out, err := k.kubectl(t, k.server, k.adminConfig, depYAML(t, obj), "delete", "--ignore-not-found", "--wait", "-f", "-"); err != nil {
					t.Errorf("clean-up: kubectl delete: %v\n%s", err, out)
				}
			}
		}
	})
	out := k.admin(t, strings.Join(docs, "---\n"), "apply", "-f", "-")
	t.Logf("created for real:\n%s", out)

	// A real token for the ServiceAccount, in a kubeconfig of its own.
	token := strings.TrimSpace(k.admin(t, "", "create", "token", sa, "-n", ns, "--duration=15m"))
	saConfig := k.writeConfig(t, "sa.kubeconfig", &clientcmdapi.AuthInfo{Token: token})
	who := strings.TrimSpace(k.as(t, saConfig, "", "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"))
	if want := "system:serviceaccount:" + ns + ":" + sa; who != want {
		t.Fatalf("the token authenticates as %q, want %q", who, want)
	}

	type check struct{ verb, resource, where string }
	canI := func(c check) bool {
		t.Helper()
		// "pods/exec" is written as a subresource: kubectl reads TYPE/NAME
		// in can-i's argument as a resource and an object name.
		res, sub, _ := strings.Cut(c.resource, "/")
		args := []string{"auth", "can-i", c.verb, res}
		switch {
		case strings.HasPrefix(res, "clusterroles.") && sub != "":
			// A ClusterRole's name, not a subresource.
			args[len(args)-1] = c.resource
		case sub != "":
			args = append(args, "--subresource="+sub)
		}
		switch c.where {
		case "":
			args = append(args, "-n", ns)
		case "*":
			args = append(args, "--all-namespaces")
		default:
			args = append(args, "-n", c.where)
		}
		out, err := k.kubectl(t, k.server, saConfig, "", args...)
		got := strings.TrimSpace(out)
		var ee *exec.ExitError
		switch {
		case err == nil && got == "yes":
			return true
		case errors.As(err, &ee) && strings.HasPrefix(got, "no"):
			return false
		}
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		return false
	}
	// What session/kube does (issue 5): shell pods (create-or-get, watch to
	// ready, heartbeat annotations, sweep, delete), exec and port-forward
	// (WebSocket upgrades are GETs and the API server also checks create),
	// Services and EndpointSlices for ssh -L.
	must := []check{
		{"create", "pods", ""}, {"get", "pods", ""}, {"list", "pods", ""}, {"watch", "pods", ""},
		{"patch", "pods", ""}, {"delete", "pods", ""},
		{"create", "pods/exec", ""}, {"get", "pods/exec", ""},
		{"create", "pods/portforward", ""}, {"get", "pods/portforward", ""},
		{"get", "services", ""}, {"list", "services", ""},
		{"get", "endpointslices.discovery.k8s.io", ""}, {"list", "endpointslices.discovery.k8s.io", ""},
		{"list", "pods", "*"}, {"watch", "pods", "*"}, // the sweep, across account namespaces
		// kube.pod.credentials: serviceaccount (issue 14): the account's
		// ServiceAccount and its RoleBinding to the ClusterRole edit.
		{"get", "serviceaccounts", ""}, {"create", "serviceaccounts", ""},
		{"get", "rolebindings.rbac.authorization.k8s.io", ""}, {"create", "rolebindings.rbac.authorization.k8s.io", ""},
		{"delete", "rolebindings.rbac.authorization.k8s.io", ""},
		{"bind", "clusterroles.rbac.authorization.k8s.io/edit", "*"},
	}
	mustNot := []check{
		{"get", "secrets", ""}, {"list", "secrets", ""}, {"list", "secrets", "*"}, {"watch", "secrets", "*"},
		{"get", "secrets", "kube-system"},
		{"create", "configmaps", ""}, {"update", "configmaps", ""}, {"patch", "configmaps", ""}, {"delete", "configmaps", ""},
		{"get", "configmaps", ""},
		{"update", "pods", ""}, {"deletecollection", "pods", ""},
		{"create", "pods/attach", ""}, {"patch", "pods/ephemeralcontainers", ""}, {"update", "pods/status", ""},
		{"create", "pods/eviction", ""}, {"create", "pods/binding", ""},
		{"create", "services", ""}, {"delete", "services", ""}, {"create", "endpointslices.discovery.k8s.io", ""},
		{"get", "nodes", "*"}, {"list", "nodes", "*"}, {"get", "nodes/proxy", "*"}, {"create", "nodes/proxy", "*"},
		{"create", "deployments.apps", ""}, {"get", "deployments.apps", ""}, {"create", "daemonsets.apps", ""},
		{"create", "jobs.batch", ""}, {"create", "cronjobs.batch", ""},
		// The pod's token is the kubelet's to ask for; the account's RBAC
		// is one RoleBinding to one ClusterRole.
		{"create", "serviceaccounts/token", ""}, {"update", "serviceaccounts", ""}, {"delete", "serviceaccounts", ""},
		{"list", "serviceaccounts", "*"},
		{"update", "rolebindings.rbac.authorization.k8s.io", ""}, {"patch", "rolebindings.rbac.authorization.k8s.io", ""},
		{"list", "rolebindings.rbac.authorization.k8s.io", "*"},
		{"create", "roles.rbac.authorization.k8s.io", ""},
		{"create", "clusterrolebindings.rbac.authorization.k8s.io", "*"},
		{"escalate", "clusterroles.rbac.authorization.k8s.io", "*"}, {"bind", "clusterroles.rbac.authorization.k8s.io", "*"},
		{"bind", "clusterroles.rbac.authorization.k8s.io/admin", "*"}, {"bind", "clusterroles.rbac.authorization.k8s.io/cluster-admin", "*"},
		{"bind", "clusterroles.rbac.authorization.k8s.io/view", "*"},
		{"escalate", "roles.rbac.authorization.k8s.io", ""}, {"bind", "roles.rbac.authorization.k8s.io", ""},
		{"impersonate", "users", "*"}, {"impersonate", "serviceaccounts", ""}, {"impersonate", "groups", "*"},
		{"create", "certificatesigningrequests.certificates.k8s.io", "*"},
		{"create", "namespaces", "*"}, {"delete", "namespaces", "*"},
		{"create", "persistentvolumes", "*"}, {"create", "persistentvolumeclaims", ""},
		{"create", "leases.coordination.k8s.io", ""}, // the heartbeat is a pod annotation, not a Lease
		{"create", "networkpolicies.networking.k8s.io", ""},
		{"create", "validatingadmissionpolicies.admissionregistration.k8s.io", "*"},
		{"create", "customresourcedefinitions.apiextensions.k8s.io", "*"},
		{"*", "*", "*"},
	}
	if namespaced {
		// Bound per namespace: nothing in kube-system.
		mustNot = append(mustNot, check{"create", "pods/exec", "kube-system"}, check{"create", "pods", "kube-system"},
			check{"delete", "pods", "kube-system"})
	} else {
		t.Logf("deploy/rbac binds its ClusterRole cluster-wide: the ServiceAccount can create, exec into and delete pods in every namespace, kube-system included (can-i create pods/exec -n kube-system: %v)",
			canI(check{"create", "pods/exec", "kube-system"}))
	}
	var table strings.Builder
	for _, c := range must {
		ok := canI(c)
		fmt.Fprintf(&table, "  %-3s %s %s %s\n", depYesNo(ok), c.verb, c.resource, depWhere(c.where, ns))
		if !ok {
			t.Errorf("the bastion's ServiceAccount cannot %s %s %s: the kube backend needs it", c.verb, c.resource, depWhere(c.where, ns))
		}
	}
	for _, c := range mustNot {
		ok := canI(c)
		fmt.Fprintf(&table, "  %-3s %s %s %s\n", depYesNo(ok), c.verb, c.resource, depWhere(c.where, ns))
		if ok {
			t.Errorf("the bastion's ServiceAccount CAN %s %s %s: more than the kube backend needs", c.verb, c.resource, depWhere(c.where, ns))
		}
	}
	t.Logf("kubectl auth can-i with the ServiceAccount's token:\n%s", table.String())

	// Secrets, for real: forbidden.
	if out, err := k.kubectl(t, k.server, saConfig, "", "get", "secrets", "-n", ns); err == nil || !strings.Contains(out, "Forbidden") {
		t.Errorf("kubectl get secrets with the ServiceAccount's token: %v\n%s", err, out)
	}

	// The backend's real operations with the token.
	shell := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "shell-rbac-check", Namespace: ns, Labels: map[string]string{kubetest.ManagedByLabel: kubetest.ManagedBy}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  depPtr(false),
			TerminationGracePeriodSeconds: depPtr(int64(1)),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: depPtr(true), RunAsUser: depPtr(int64(50001)), RunAsGroup: depPtr(int64(50001)),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name: "shell", Image: kubetest.ShellImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{kubetest.EchoCommand, "-addr", ":8080"},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: depPtr(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					ReadOnlyRootFilesystem:   depPtr(true),
				},
			}},
		},
	}
	k.as(t, saConfig, depYAML(t, shell), "create", "-f", "-")
	k.as(t, saConfig, "", "wait", "-n", ns, "--for=condition=Ready", "pod/"+shell.Name, "--timeout=90s")
	if out := k.as(t, saConfig, "", "exec", "-n", ns, shell.Name, "--", "/bin/sh", "-c", "echo exec-ok uid=$(id -u)"); !strings.Contains(out, "exec-ok uid=50001") {
		t.Errorf("exec with the ServiceAccount's token: %q", out)
	}
	k.as(t, saConfig, "", "annotate", "-n", ns, "pod/"+shell.Name, "bastion.test/heartbeat="+time.Now().UTC().Format(time.RFC3339))
	k.portForwardEcho(t, saConfig, ns, shell.Name)
	k.as(t, saConfig, "", "delete", "-n", ns, "pod/"+shell.Name, "--wait=true", "--timeout=60s")
	t.Log("with the ServiceAccount's token: created, watched to Ready, exec'd into, annotated, port-forwarded to and deleted a pod")

	// kube.pod.credentials: the account's ServiceAccount and its
	// RoleBinding to edit, for real; a binding to any other ClusterRole is
	// refused by the API server's escalation check.
	k.as(t, saConfig, "", "create", "serviceaccount", "-n", ns, "bastion-shell")
	k.as(t, saConfig, "", "create", "rolebinding", "-n", ns, "bastion-shell", "--clusterrole=edit", "--serviceaccount="+ns+":bastion-shell")
	k.as(t, saConfig, "", "delete", "rolebinding", "-n", ns, "bastion-shell")
	for _, role := range []string{"admin", "cluster-admin", "view"} {
		out, err := k.kubectl(t, k.server, saConfig, "", "create", "rolebinding", "-n", ns, "bastion-shell-"+role, "--clusterrole="+role, "--serviceaccount="+ns+":bastion-shell")
		if err == nil || !strings.Contains(out, "forbidden") {
			t.Errorf("a RoleBinding to ClusterRole %s with the ServiceAccount's token: %v\n%s", role, err, out)
		}
	}
	t.Log("with the ServiceAccount's token: created a ServiceAccount and a RoleBinding to edit, deleted it; RoleBindings to admin, cluster-admin and view: forbidden")
}

// --- helpers -------------------------------------------------------------

func depYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func depWhere(w, ns string) string {
	switch w {
	case "":
		return "in " + ns
	case "*":
		return "in all namespaces"
	}
	return "in " + w
}

func depPtr[T any](v T) *T { return &v }

func depEqualPtr[T comparable](a, b *T) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

func depKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func depWriteFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func depHostPort(t *testing.T, key, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", key, addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("%s %q: %v", key, addr, err)
	}
	return host, n
}

func depContainerPort(t *testing.T, c corev1.Container, name string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return int(p.ContainerPort)
		}
	}
	t.Fatalf("container %s has no port named %s", c.Name, name)
	return 0
}

func depYAML(t *testing.T, obj runtime.Object) string {
	t.Helper()
	b, err := sigsyaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// renderKubectl is the kubectl that renders: Debian's /usr/bin/kubectl if
// present (what an operator has), else the one integration/cluster/up built.
func depRenderKubectl(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/kubectl"); err == nil {
		return "/usr/bin/kubectl"
	}
	if p := depClusterKubectl(); p != "" {
		return p
	}
	if os.Getenv("BASTION_SKIP_KUBE") == "1" {
		t.Skip("no kubectl to render deploy/ with: integration/cluster/up builds one, and BASTION_SKIP_KUBE=1 skipped it")
	}
	t.Fatal("no kubectl to render deploy/ with: install one as /usr/bin/kubectl, or run integration/cluster/up, which builds one")
	return ""
}

// clusterKubectl is the kubectl integration/cluster/up built, in step with
// the test cluster's version, or "".
func depClusterKubectl() string {
	cache := os.Getenv("BASTION_CACHE_DIR")
	if cache == "" {
		cache = "../.cache"
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "kube", "*", "bin", "kubectl"))
	if len(matches) == 0 {
		return ""
	}
	slices.Sort(matches)
	p, err := filepath.Abs(matches[len(matches)-1])
	if err != nil {
		return ""
	}
	return p
}

func depKustomize(t *testing.T, kubectl, dir string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s depKustomize %s: %v\n%s", kubectl, dir, err, stderr.String())
	}
	return stdout.String()
}

// deployWrap writes a kustomization that puts dir's objects in namespace ns
// (and adds suffix to their names) and returns its directory.
func deployWrap(t *testing.T, ns, dir, suffix string) string {
	t.Helper()
	wrap := t.TempDir()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wrap, abs) // kustomize refuses absolute paths
	if err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprintf("namespace: %s\nresources:\n  - %s\n", ns, rel)
	if suffix != "" {
		k += "nameSuffix: " + suffix + "\n"
	}
	depWriteFile(t, filepath.Join(wrap, "kustomization.yaml"), k)
	return wrap
}

// manifests are decoded objects, by kind and name.
type depManifests struct {
	all    []runtime.Object
	byKind map[string]map[string]runtime.Object
	// generators are the secretGenerator entries of the secrets
	// kustomization: name → keys.
	generators map[string][]string
}

func depParse(t *testing.T, text string) *depManifests {
	t.Helper()
	m := &depManifests{byKind: map[string]map[string]runtime.Object{}}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(text), 4096)
	for {
		var raw runtime.RawExtension
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("rendered manifests: %v", err)
		}
		if len(bytes.TrimSpace(raw.Raw)) == 0 || string(bytes.TrimSpace(raw.Raw)) == "null" {
			continue
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(raw.Raw, nil, nil)
		if err != nil {
			t.Fatalf("rendered manifests: decode: %v\n%s", err, raw.Raw)
		}
		obj.GetObjectKind().SetGroupVersionKind(*gvk)
		name := obj.(metav1.Object).GetName()
		if m.byKind[gvk.Kind] == nil {
			m.byKind[gvk.Kind] = map[string]runtime.Object{}
		}
		m.byKind[gvk.Kind][name] = obj
		m.all = append(m.all, obj)
	}
	return m
}

func (m *depManifests) get(t *testing.T, kind, name string) runtime.Object {
	t.Helper()
	obj, ok := m.byKind[kind][name]
	if !ok {
		t.Fatalf("no %s %s in the rendered depManifests (have %v)", kind, name, depKeys(m.byKind[kind]))
	}
	return obj
}

func (m *depManifests) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	return m.get(t, "Deployment", name).(*appsv1.Deployment)
}

func (m *depManifests) configMap(t *testing.T, name string) *corev1.ConfigMap {
	t.Helper()
	return m.get(t, "ConfigMap", name).(*corev1.ConfigMap)
}

// secretKeysFromGenerator returns the file keys of a secretGenerator entry
// of deploy/overlays/example/secrets (which needs the operator's files to
// render, so it is read, not rendered).
func (m *depManifests) secretKeysFromGenerator(t *testing.T, name string) []string {
	t.Helper()
	if m.generators == nil {
		data, err := os.ReadFile(filepath.Join(deploySecrets, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var k struct {
			SecretGenerator []struct {
				Name  string   `yaml:"name"`
				Files []string `yaml:"files"`
			} `yaml:"secretGenerator"`
		}
		if err := yaml.Unmarshal(data, &k); err != nil {
			t.Fatalf("%s/kustomization.yaml: %v", deploySecrets, err)
		}
		m.generators = map[string][]string{}
		for _, g := range k.SecretGenerator {
			for _, f := range g.Files {
				key, _, _ := strings.Cut(f, "=")
				m.generators[g.Name] = append(m.generators[g.Name], key)
			}
		}
	}
	return m.generators[name]
}

// deployCluster is the real test cluster, driven with kubectl.
type deployCluster struct {
	render      string // kubectl for kustomize
	server      string // kubectl for the API server: the cluster's own version when available
	client      kubernetes.Interface
	rest        *rest.Config
	adminConfig string
	dir         string
}

func newDeployCluster(t *testing.T) *deployCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("deploy test: needs the real Kubernetes test cluster; skipped with -short")
	}
	cfg, client := kubetest.Client(t)
	k := &deployCluster{render: depRenderKubectl(t), client: client, rest: cfg, dir: t.TempDir()}
	k.server = depClusterKubectl()
	if k.server == "" {
		k.server = k.render
	}
	k.adminConfig = k.writeConfig(t, "admin.kubeconfig", &clientcmdapi.AuthInfo{
		ClientCertificate: cfg.CertFile, ClientCertificateData: cfg.CertData,
		ClientKey: cfg.KeyFile, ClientKeyData: cfg.KeyData,
		Token: cfg.BearerToken, TokenFile: cfg.BearerTokenFile,
	})
	return k
}

// writeConfig writes a kubeconfig for the test cluster with user's
// credentials and returns its path.
func (k *deployCluster) writeConfig(t *testing.T, name string, user *clientcmdapi.AuthInfo) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{
		Server:                   k.rest.Host,
		CertificateAuthority:     k.rest.CAFile,
		CertificateAuthorityData: k.rest.CAData,
	}
	cfg.AuthInfos["user"] = user
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "user"}
	cfg.CurrentContext = "test"
	path := filepath.Join(k.dir, name)
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubectl runs bin with kubeconfig and returns its combined output.
func (k *deployCluster) kubectl(t *testing.T, bin, kubeconfig, stdin string, args ...string) (string, error) {
	t.Helper()
	// WithoutCancel: t.Context() is already cancelled when the clean-ups
	// that delete cluster-wide objects run.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", kubeconfig, "--request-timeout=30s"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// admin runs kubectl as the cluster admin and fails the test on an error.
func (k *deployCluster) admin(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	return k.as(t, k.adminConfig, stdin, args...)
}

// as runs kubectl with kubeconfig and fails the test on an error.
func (k *deployCluster) as(t *testing.T, kubeconfig, stdin string, args ...string) string {
	t.Helper()
	out, err := k.kubectl(t, k.server, kubeconfig, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// portForwardEcho runs kubectl port-forward to the pod's echo listener
// with kubeconfig and checks that bytes come back.
func (k *deployCluster) portForwardEcho(t *testing.T, kubeconfig, ns, pod string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.server, "--kubeconfig", kubeconfig, "port-forward", "-n", ns, "--address", "127.0.0.1", "pod/"+pod, ":8080")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	// "Forwarding from 127.0.0.1:41231 -> 8080"
	re := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) ->`)
	sc := bufio.NewScanner(stdout)
	var addr string
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		t.Fatalf("kubectl port-forward with the ServiceAccount's token did not start: %s", stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	msg := "through the API server with the bastion's token\n"
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != msg {
		t.Fatalf("port-forward echo: got %q, %v (kubectl: %s)", got, err, stderr.String())
	}
}

package config

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/api/validate/content"
)

// Kube configures the kube backend (backend.type: kube): each account's
// shell runs in a pod of its project's cluster.
//
// Templates (namespaces, home volume) may contain {account} (the
// account's short name: a person's login name, or a tool's name without
// ToolPrefix; {name} means the same), {project} (the cluster's name),
// {home} (the account's home directory) and {uid}.
type Kube struct {
	// Clusters are the projects' clusters, one per project.
	Clusters []KubeCluster `yaml:"clusters"`
	// ProjectGroupPattern chooses a user's project from group membership:
	// a group named like the pattern, where {project} stands for a
	// cluster's name ("project-{project}"), puts the user in that project.
	// The first cluster (in config order) the user is a member of wins.
	ProjectGroupPattern string `yaml:"project_group_pattern"`
	// DefaultProject is used for users in no project (single-project
	// installs). Empty: such users are refused.
	DefaultProject string `yaml:"default_project"`
	// ToolPrefix starts tool account names ("tools." in "tools.mytool").
	ToolPrefix string `yaml:"tool_prefix"`

	// Pod holds the pod defaults; a cluster's own pod section overrides
	// them key by key.
	Pod KubePod `yaml:"pod"`

	// ReplicaID names this bastion in the pods' session annotations.
	// Empty: the host name and a random suffix, new at every start.
	ReplicaID string `yaml:"replica_id"`
	// IdleTimeout: a pod with no session on any replica for this long is
	// deleted.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// DetachedMaxAge: an idle pod in which the account's detached
	// processes run (tmux, screen, nohup, setsid) is kept for up to this
	// long after its last session, then deleted like any idle pod. 0:
	// detached processes keep no pod.
	DetachedMaxAge time.Duration `yaml:"detached_max_age"`
	// SweepInterval is how often each replica looks for idle, stale and
	// orphaned pods.
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// HeartbeatInterval is how often a replica refreshes the annotation of
	// the pods it has sessions in; an annotation not refreshed for three
	// intervals belongs to a dead replica and is ignored.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// StartTimeout bounds the wait for a new pod to become ready.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// APITimeout bounds each API request (not exec or port-forward
	// streams, nor watches).
	APITimeout time.Duration `yaml:"api_timeout"`
	// QPS and Burst are client-go's rate limit, per cluster and for each
	// of its two clients: the one that starts pods (and makes their
	// namespace, ServiceAccount and RoleBinding), and the one for
	// everything else (sessions, heartbeat, sweep), so that a login storm
	// never queues the requests of sessions in running pods.
	QPS   float32 `yaml:"qps"`
	Burst int     `yaml:"burst"`
	// ClusterDomain is the clusters' DNS domain, for Service names in
	// ssh -L destinations (NAME.NAMESPACE.svc.CLUSTER_DOMAIN).
	ClusterDomain string `yaml:"cluster_domain"`
	// Preflight checks, when the config is loaded and on every reload,
	// that each cluster can start its shell images.
	Preflight KubePreflight `yaml:"preflight"`
}

// KubePreflight configures the pre-flight check: a short-lived probe pod
// per cluster and shell image (primary and fallbacks), with the shell
// pod's image, security context and resources and a trivial command.
type KubePreflight struct {
	// Namespace for the probe pods, a template with {project}. Empty: the
	// cluster's user namespace template for the account
	// "bastion-preflight" (created only if the cluster creates namespaces).
	Namespace string `yaml:"namespace"`
	// Timeout bounds each probe: a probe pod not started by then (not
	// scheduled, image still pulling) is a failure, with the reason.
	Timeout time.Duration `yaml:"timeout"`
	// RetryInterval: while a cluster has an image that failed (or could
	// not be checked), pre-flight runs again this often, so that new pods
	// move back to the primary once it works. 0: only at load and reload.
	RetryInterval time.Duration `yaml:"retry_interval"`
}

// KubeCluster is one project's cluster.
type KubeCluster struct {
	// Name is the project's name.
	Name string `yaml:"name"`
	// Kubeconfig is the bastion's kubeconfig for the cluster; it is
	// reloaded when it (or a file it names) changes.
	Kubeconfig string `yaml:"kubeconfig"`
	// Context in the kubeconfig; empty: its current context.
	Context   string        `yaml:"context"`
	Namespace KubeNamespace `yaml:"namespace"`
	// Pod overrides kube.pod for this cluster, key by key.
	Pod KubePod `yaml:"pod"`
}

// KubeNamespace says where shell pods live.
type KubeNamespace struct {
	// Tool and User are the namespace templates for tool accounts and for
	// people.
	Tool string `yaml:"tool"`
	User string `yaml:"user"`
	// Create makes missing namespaces (needs RBAC on namespaces).
	Create *bool `yaml:"create"`
}

// KubePod is the shell pod's spec.
type KubePod struct {
	// Image should be pinned by digest (repo@sha256:...); a tag draws a
	// warning at start-up.
	Image string `yaml:"image"`
	// FallbackImages are tried in order when a shell pod cannot pull the
	// image before them (ErrImagePull, ImagePullBackOff,
	// ErrImageNeverPull): the previous images, pinned by digest (a tag
	// draws a warning at load).
	FallbackImages  []string `yaml:"fallback_images"`
	ImagePullPolicy string   `yaml:"image_pull_policy"`
	// CPU and memory requests and limits, as Kubernetes quantities.
	CPURequest    string `yaml:"cpu_request"`
	CPULimit      string `yaml:"cpu_limit"`
	MemoryRequest string `yaml:"memory_request"`
	MemoryLimit   string `yaml:"memory_limit"`
	// PidsLimit caps the account's processes (RLIMIT_NPROC, set by the
	// session wrapper; the pod API has no per-pod pids limit, so set the
	// kubelet's podPidsLimit too). 0: no limit.
	PidsLimit *int `yaml:"pids_limit"`
	// TmpSize is the size limit of the pod's /tmp (an emptyDir).
	TmpSize string `yaml:"tmp_size"`
	// HelperImage is bastion's own image (it holds
	// /usr/local/bin/bastion-helper), pinned by digest: an init container
	// copies the helper into the pod, and sessions run through it (exit
	// signals by name, hang-up of dropped sessions, SFTP where the shell
	// image has no sftp-server). Empty: no helper; a shell wrapper runs
	// sessions and death by signal N is reported as status 128+N.
	HelperImage string `yaml:"helper_image"`
	// ReadOnlyRootFilesystem for the shell container: /tmp, /var/tmp and
	// /run are writable emptyDirs. Turn off for images that need more.
	ReadOnlyRootFilesystem *bool `yaml:"read_only_root_filesystem"`
	// Passwd gives the pod /etc/passwd and /etc/group with the account's
	// entry (sftp-server and scp refuse a uid without one).
	Passwd *bool `yaml:"passwd"`
	// Home is the home directory volume, mounted at the account's home.
	Home KubeHome `yaml:"home"`

	// Credentials gives the shell the account's own Kubernetes
	// credentials: "serviceaccount" (a ServiceAccount in the account's
	// namespace, bound there only to CredentialsClusterRole, its token
	// projected into the pod with a KUBECONFIG that uses it) or "none"
	// (no credentials at all: for platforms that write kubeconfigs into
	// homes themselves).
	Credentials string `yaml:"credentials"`
	// CredentialsClusterRole is the ClusterRole the account's
	// ServiceAccount is bound to, in its namespace only (a RoleBinding).
	// bastion's own RBAC needs the bind verb on exactly this ClusterRole.
	CredentialsClusterRole string `yaml:"credentials_cluster_role"`
	// CredentialsTokenLifetime is the projected token's lifetime (the
	// kubelet renews it at 80%); at least 10m, at most 24h.
	CredentialsTokenLifetime time.Duration `yaml:"credentials_token_lifetime"`
	// CredentialsAPIServer is the API server's URL as the pods reach it.
	CredentialsAPIServer string `yaml:"credentials_api_server"`

	PriorityClassName string            `yaml:"priority_class_name"`
	NodeSelector      map[string]string `yaml:"node_selector"`
	Tolerations       []KubeToleration  `yaml:"tolerations"`
	// Labels and Annotations are added to every pod.
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
	// TerminationGracePeriod is how long processes get after SIGTERM.
	TerminationGracePeriod time.Duration `yaml:"termination_grace_period"`
}

// KubeHome is the home directory volume template.
type KubeHome struct {
	// Type is nfs, pvc, hostPath or none.
	Type string `yaml:"type"`
	// Server is the NFS server.
	Server string `yaml:"server"`
	// Path is the NFS export path or the hostPath path (template).
	Path string `yaml:"path"`
	// Claim is the PersistentVolumeClaim's name (template).
	Claim string `yaml:"claim"`
	// SubPath is mounted instead of the volume's root (template).
	SubPath  string `yaml:"sub_path"`
	ReadOnly bool   `yaml:"read_only"`
}

// KubeToleration is a pod toleration.
type KubeToleration struct {
	Key      string `yaml:"key"`
	Operator string `yaml:"operator"`
	Value    string `yaml:"value"`
	Effect   string `yaml:"effect"`
	// Seconds is tolerationSeconds (NoExecute); nil: forever.
	Seconds *int64 `yaml:"seconds"`
}

func defaultKube() Kube {
	yes := true
	pids := 100
	return Kube{
		ToolPrefix:        "tools.",
		IdleTimeout:       30 * time.Minute,
		DetachedMaxAge:    7 * 24 * time.Hour,
		SweepInterval:     time.Minute,
		HeartbeatInterval: time.Minute,
		StartTimeout:      60 * time.Second,
		APITimeout:        10 * time.Second,
		QPS:               50,
		Burst:             100,
		ClusterDomain:     "cluster.local",
		Preflight:         KubePreflight{Timeout: 30 * time.Second, RetryInterval: time.Minute},
		Pod: KubePod{
			ImagePullPolicy:        "IfNotPresent",
			CPURequest:             "100m",
			CPULimit:               "300m",
			MemoryRequest:          "256Mi",
			MemoryLimit:            "1Gi",
			PidsLimit:              &pids,
			TmpSize:                "1Gi",
			ReadOnlyRootFilesystem: &yes,
			Passwd:                 &yes,
			Home:                   KubeHome{Type: "none"},
			TerminationGracePeriod: 10 * time.Second,

			Credentials:              CredentialsServiceAccount,
			CredentialsClusterRole:   "edit",
			CredentialsTokenLifetime: time.Hour,
			CredentialsAPIServer:     "https://kubernetes.default.svc",
		},
	}
}

// kube.pod.credentials values.
const (
	CredentialsServiceAccount = "serviceaccount"
	CredentialsNone           = "none"
)

// Default namespace templates.
const (
	DefaultKubeToolNamespace = "tool-{account}"
	DefaultKubeUserNamespace = "user-{account}"
)

// ToolNamespace returns the cluster's tool namespace template.
func (c KubeCluster) ToolNamespace() string {
	if c.Namespace.Tool == "" {
		return DefaultKubeToolNamespace
	}
	return c.Namespace.Tool
}

// UserNamespace returns the cluster's namespace template for people.
func (c KubeCluster) UserNamespace() string {
	if c.Namespace.User == "" {
		return DefaultKubeUserNamespace
	}
	return c.Namespace.User
}

// CreateNamespaces reports whether bastion creates missing namespaces.
func (c KubeCluster) CreateNamespaces() bool { return c.Namespace.Create != nil && *c.Namespace.Create }

// PodFor returns cluster c's pod spec: c.Pod over k.Pod, key by key (a key
// the cluster leaves unset keeps the kube.pod value; home is taken whole
// when the cluster sets its type).
func (k *Kube) PodFor(c KubeCluster) KubePod {
	p := k.Pod
	o := c.Pod
	str := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	str(&p.Image, o.Image)
	if o.FallbackImages != nil {
		p.FallbackImages = o.FallbackImages
	}
	str(&p.ImagePullPolicy, o.ImagePullPolicy)
	str(&p.CPURequest, o.CPURequest)
	str(&p.CPULimit, o.CPULimit)
	str(&p.MemoryRequest, o.MemoryRequest)
	str(&p.MemoryLimit, o.MemoryLimit)
	str(&p.TmpSize, o.TmpSize)
	str(&p.HelperImage, o.HelperImage)
	str(&p.PriorityClassName, o.PriorityClassName)
	str(&p.Credentials, o.Credentials)
	str(&p.CredentialsClusterRole, o.CredentialsClusterRole)
	str(&p.CredentialsAPIServer, o.CredentialsAPIServer)
	if o.CredentialsTokenLifetime != 0 {
		p.CredentialsTokenLifetime = o.CredentialsTokenLifetime
	}
	if o.PidsLimit != nil {
		p.PidsLimit = o.PidsLimit
	}
	if o.ReadOnlyRootFilesystem != nil {
		p.ReadOnlyRootFilesystem = o.ReadOnlyRootFilesystem
	}
	if o.Passwd != nil {
		p.Passwd = o.Passwd
	}
	if o.Home.Type != "" {
		p.Home = o.Home
	}
	if o.NodeSelector != nil {
		p.NodeSelector = o.NodeSelector
	}
	if o.Tolerations != nil {
		p.Tolerations = o.Tolerations
	}
	if o.Labels != nil || p.Labels != nil {
		m := maps.Clone(p.Labels)
		if m == nil {
			m = map[string]string{}
		}
		maps.Copy(m, o.Labels)
		p.Labels = m
	}
	if o.Annotations != nil || p.Annotations != nil {
		m := maps.Clone(p.Annotations)
		if m == nil {
			m = map[string]string{}
		}
		maps.Copy(m, o.Annotations)
		p.Annotations = m
	}
	if o.TerminationGracePeriod != 0 {
		p.TerminationGracePeriod = o.TerminationGracePeriod
	}
	return p
}

// Images returns cluster c's shell images: the primary, then the
// fallbacks in order, each once.
func (k *Kube) Images(c KubeCluster) []string {
	p := k.PodFor(c)
	var out []string
	for _, img := range append([]string{p.Image}, p.FallbackImages...) {
		if img != "" && !slices.Contains(out, img) {
			out = append(out, img)
		}
	}
	return out
}

// PinnedImage reports whether an image reference names a digest.
func PinnedImage(image string) bool { return strings.Contains(image, "@sha256:") }

// FallbackWarnings lists the fallback images given by tag rather than by
// digest, with their key paths: a tag can be moved or pruned, so the
// image a rollback lands on would not be the one that was tested.
func (k *Kube) FallbackWarnings() []string {
	var out []string
	check := func(path string, images []string) {
		for i, img := range images {
			if img != "" && !PinnedImage(img) {
				out = append(out, fmt.Sprintf("%s.fallback_images[%d]: %q is a tag, not a digest; pin it (repo@sha256:...) so that a fallback runs the image you tested and the registry can keep it", path, i, img))
			}
		}
	}
	check("kube.pod", k.Pod.FallbackImages)
	for i, c := range k.Clusters {
		check(fmt.Sprintf("kube.clusters[%d].pod", i), c.Pod.FallbackImages)
	}
	return out
}

// Cluster returns the cluster named name.
func (k *Kube) Cluster(name string) (KubeCluster, bool) {
	for _, c := range k.Clusters {
		if c.Name == name {
			return c, true
		}
	}
	return KubeCluster{}, false
}

func (k *Kube) resolvePaths(abs func(*string)) {
	for i := range k.Clusters {
		abs(&k.Clusters[i].Kubeconfig)
	}
}

// templateVars are the placeholders templates may use.
var templateVars = []string{"{account}", "{name}", "{project}", "{home}", "{uid}"}

func checkTemplate(p *Problems, path, tmpl string, allowed ...string) {
	rest := tmpl
	for _, v := range allowed {
		rest = strings.ReplaceAll(rest, v, "")
	}
	if i := strings.IndexAny(rest, "{}"); i >= 0 {
		p.Addf(path, "unknown placeholder in %q (allowed: %s)", tmpl, strings.Join(allowed, " "))
	}
}

func (k *Kube) validate(p *Problems, path string) {
	if len(k.Clusters) == 0 {
		p.Addf(path+".clusters", "at least one cluster is required when backend.type is kube")
	}
	seen := map[string]bool{}
	for i, c := range k.Clusters {
		cp := fmt.Sprintf("%s.clusters[%d]", path, i)
		switch {
		case c.Name == "":
			p.Addf(cp+".name", "required (the project's name)")
		case !isDNSLabel(c.Name) || len(c.Name) > 40:
			p.Addf(cp+".name", "%q must be a lower-case DNS label of at most 40 characters", c.Name)
		case seen[c.Name]:
			p.Addf(cp+".name", "%q is used by another cluster", c.Name)
		}
		seen[c.Name] = true
		if c.Kubeconfig == "" {
			p.Addf(cp+".kubeconfig", "required (the bastion's kubeconfig for this cluster)")
		}
		for key, t := range map[string]string{"tool": c.ToolNamespace(), "user": c.UserNamespace()} {
			np := cp + ".namespace." + key
			checkTemplate(p, np, t, "{account}", "{name}", "{project}")
			if !strings.Contains(t, "{account}") && !strings.Contains(t, "{name}") {
				// One shared namespace is allowed: pods are still per account.
				probe := strings.ReplaceAll(t, "{project}", "p")
				if !isDNSLabel(probe) {
					p.Addf(np, "%q is not a valid namespace name", t)
				}
				continue
			}
			probe := strings.NewReplacer("{account}", "a", "{name}", "a", "{project}", "p").Replace(t)
			if !isDNSLabel(probe) {
				p.Addf(np, "%q does not make valid namespace names (lower-case letters, digits and '-')", t)
			}
		}
		pod := k.PodFor(c)
		validatePod(p, cp+".pod", pod)
		if pod.Credentials == CredentialsServiceAccount {
			// One ServiceAccount per namespace: a namespace shared by
			// several accounts would give each the others' pods.
			for key, t := range map[string]string{"tool": c.ToolNamespace(), "user": c.UserNamespace()} {
				if !strings.Contains(t, "{account}") && !strings.Contains(t, "{name}") {
					p.Addf(cp+".namespace."+key, "%q is shared by every account, so kube.pod.credentials: serviceaccount would give each account the others' pods; use {account} in it, or credentials: none", t)
				}
			}
		}
	}
	if k.DefaultProject != "" {
		if _, ok := k.Cluster(k.DefaultProject); !ok {
			p.Addf(path+".default_project", "%q is not the name of a cluster in %s.clusters", k.DefaultProject, path)
		}
	}
	if k.ProjectGroupPattern != "" && strings.Count(k.ProjectGroupPattern, "{project}") != 1 {
		p.Addf(path+".project_group_pattern", "%q must contain {project} once, e.g. project-{project}", k.ProjectGroupPattern)
	}
	if k.ProjectGroupPattern == "" && k.DefaultProject == "" && len(k.Clusters) > 0 {
		p.Addf(path+".default_project", "set default_project or project_group_pattern: otherwise no user has a project")
	}
	if k.ReplicaID != "" && !regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,30}[A-Za-z0-9])?$`).MatchString(k.ReplicaID) {
		p.Addf(path+".replica_id", "%q must be 1 to 32 letters, digits, '-', '_' or '.'", k.ReplicaID)
	}
	Positive(p, path+".idle_timeout", k.IdleTimeout)
	NonNegative(p, path+".detached_max_age", k.DetachedMaxAge)
	if k.DetachedMaxAge > 0 && k.DetachedMaxAge < k.IdleTimeout {
		p.Addf(path+".detached_max_age", "%v is shorter than idle_timeout (%v): set it longer, or 0 to let detached processes keep no pod", k.DetachedMaxAge, k.IdleTimeout)
	}
	Positive(p, path+".sweep_interval", k.SweepInterval)
	Positive(p, path+".heartbeat_interval", k.HeartbeatInterval)
	Positive(p, path+".start_timeout", k.StartTimeout)
	Positive(p, path+".api_timeout", k.APITimeout)
	Positive(p, path+".qps", k.QPS)
	AtLeast(p, path+".burst", k.Burst, 1)
	if k.ClusterDomain == "" || strings.HasPrefix(k.ClusterDomain, ".") || strings.HasSuffix(k.ClusterDomain, ".") {
		p.Addf(path+".cluster_domain", "%q must be a domain like cluster.local", k.ClusterDomain)
	}
	pf := k.Preflight
	Positive(p, path+".preflight.timeout", pf.Timeout)
	NonNegative(p, path+".preflight.retry_interval", pf.RetryInterval)
	if pf.Namespace != "" {
		checkTemplate(p, path+".preflight.namespace", pf.Namespace, "{project}")
		if probe := strings.ReplaceAll(pf.Namespace, "{project}", "p"); !isDNSLabel(probe) {
			p.Addf(path+".preflight.namespace", "%q is not a valid namespace name", pf.Namespace)
		}
	}
}

func validatePod(p *Problems, path string, pod KubePod) {
	if pod.Image == "" {
		p.Addf(path+".image", "required (the shell image, pinned by digest: repo@sha256:...)")
	}
	for i, img := range pod.FallbackImages {
		fp := fmt.Sprintf("%s.fallback_images[%d]", path, i)
		switch {
		case img == "" || strings.ContainsAny(img, " \t\n"):
			p.Addf(fp, "%q is not an image reference", img)
		case img == pod.Image:
			p.Addf(fp, "%q is the primary image itself; list the previous images", img)
		case slices.Contains(pod.FallbackImages[:i], img):
			p.Addf(fp, "%q is listed twice", img)
		}
	}
	if strings.ContainsAny(pod.HelperImage, " \t\n") {
		p.Addf(path+".helper_image", "%q is not an image reference", pod.HelperImage)
	}
	validateCredentials(p, path, pod)
	switch pod.ImagePullPolicy {
	case "Always", "IfNotPresent", "Never":
	default:
		p.Addf(path+".image_pull_policy", "must be Always, IfNotPresent or Never, not %q", pod.ImagePullPolicy)
	}
	quantities := []struct {
		key, v string
		need   bool
	}{
		{"cpu_request", pod.CPURequest, false}, {"cpu_limit", pod.CPULimit, false},
		{"memory_request", pod.MemoryRequest, false}, {"memory_limit", pod.MemoryLimit, false},
		{"tmp_size", pod.TmpSize, false},
	}
	parsed := map[string]resource.Quantity{}
	for _, q := range quantities {
		if q.v == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.v)
		if err != nil || v.Sign() < 0 {
			p.Addf(path+"."+q.key, "%q is not a quantity (e.g. 300m, 1Gi)", q.v)
			continue
		}
		parsed[q.key] = v
	}
	for _, pair := range [][2]string{{"cpu_request", "cpu_limit"}, {"memory_request", "memory_limit"}} {
		req, ok1 := parsed[pair[0]]
		lim, ok2 := parsed[pair[1]]
		if ok1 && ok2 && req.Cmp(lim) > 0 {
			p.Addf(path+"."+pair[0], "%s is more than %s %s", req.String(), pair[1], lim.String())
		}
	}
	if pod.PidsLimit != nil {
		NonNegative(p, path+".pids_limit", *pod.PidsLimit)
	}
	if pod.TerminationGracePeriod < 0 {
		p.Addf(path+".termination_grace_period", "must not be negative")
	}
	h := pod.Home
	hp := path + ".home"
	switch h.Type {
	case "none":
	case "nfs":
		if h.Server == "" {
			p.Addf(hp+".server", "required for an nfs home")
		}
		if !strings.HasPrefix(h.Path, "/") && !strings.HasPrefix(h.Path, "{home}") {
			p.Addf(hp+".path", "%q must be an absolute export path (template)", h.Path)
		}
	case "hostPath":
		if !strings.HasPrefix(h.Path, "/") && !strings.HasPrefix(h.Path, "{home}") {
			p.Addf(hp+".path", "%q must be an absolute path (template)", h.Path)
		}
	case "pvc":
		if h.Claim == "" {
			p.Addf(hp+".claim", "required for a pvc home")
		}
	default:
		p.Addf(hp+".type", "must be nfs, pvc, hostPath or none, not %q", h.Type)
	}
	checkTemplate(p, hp+".path", h.Path, templateVars...)
	checkTemplate(p, hp+".claim", h.Claim, templateVars...)
	checkTemplate(p, hp+".sub_path", h.SubPath, templateVars...)
	if strings.Contains(h.SubPath, "..") || strings.HasPrefix(h.SubPath, "/") {
		p.Addf(hp+".sub_path", "%q must be a relative path without '..'", h.SubPath)
	}
	for i, t := range pod.Tolerations {
		tp := fmt.Sprintf("%s.tolerations[%d]", path, i)
		if t.Operator != "" && t.Operator != "Exists" && t.Operator != "Equal" {
			p.Addf(tp+".operator", "must be Exists or Equal, not %q", t.Operator)
		}
		if t.Effect != "" && !slices.Contains([]string{"NoSchedule", "PreferNoSchedule", "NoExecute"}, t.Effect) {
			p.Addf(tp+".effect", "must be NoSchedule, PreferNoSchedule or NoExecute, not %q", t.Effect)
		}
		if t.Operator == "Exists" && t.Value != "" {
			p.Addf(tp+".value", "must be empty with operator Exists")
		}
	}
	for k := range pod.Labels {
		if strings.HasPrefix(k, "bastion.io/") || k == "app.kubernetes.io/managed-by" {
			p.Addf(path+".labels", "%q is set by bastion itself", k)
		}
	}
}

func validateCredentials(p *Problems, path string, pod KubePod) {
	switch pod.Credentials {
	case CredentialsNone:
		return
	case CredentialsServiceAccount:
	default:
		p.Addf(path+".credentials", "must be serviceaccount or none, not %q", pod.Credentials)
		return
	}
	if errs := content.IsPathSegmentName(pod.CredentialsClusterRole); pod.CredentialsClusterRole == "" || len(errs) > 0 {
		p.Addf(path+".credentials_cluster_role", "%q is not a ClusterRole name (e.g. edit)", pod.CredentialsClusterRole)
	}
	if l := pod.CredentialsTokenLifetime; l < 10*time.Minute || l > 24*time.Hour {
		p.Addf(path+".credentials_token_lifetime", "must be between 10m and 24h (the API server's bounds for a projected token), not %v", l)
	}
	u, err := url.Parse(pod.CredentialsAPIServer)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		p.Addf(path+".credentials_api_server", "%q must be an https URL with a host and nothing else (e.g. https://kubernetes.default.svc)", pod.CredentialsAPIServer)
	}
}

package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The README's worked example (testdata/readme/kube.yaml): paths resolve
// next to the file, defaults fill the rest, clusters override kube.pod key
// by key.
func TestKubeWorkedExample(t *testing.T) {
	t.Parallel()
	cfg, dir := readmeExample(t, "kube.yaml")
	k := cfg.Kube
	if want := filepath.Join(dir, "kube/tools.kubeconfig"); k.Clusters[0].Kubeconfig != want {
		t.Errorf("kubeconfig %q, want it resolved to %q", k.Clusters[0].Kubeconfig, want)
	}
	if k.ToolPrefix != "tools." || k.SweepInterval != time.Minute || k.ClusterDomain != "cluster.local" {
		t.Errorf("defaults lost: %q %s %q", k.ToolPrefix, k.SweepInterval, k.ClusterDomain)
	}
	tools, prep := k.PodFor(k.Clusters[0]), k.PodFor(k.Clusters[1])
	if tools.MemoryLimit != "1Gi" || prep.MemoryLimit != "2Gi" || prep.CPULimit != "300m" || prep.Image != tools.Image {
		t.Errorf("pod overrides: tools %s, deployment-prep %s %s", tools.MemoryLimit, prep.MemoryLimit, prep.CPULimit)
	}
	if tools.Home.Type != "nfs" || prep.Home.Type != "pvc" || prep.NodeSelector["pool"] != "shells" {
		t.Errorf("home %q/%q, node selector %v", tools.Home.Type, prep.Home.Type, prep.NodeSelector)
	}
	if k.Clusters[0].ToolNamespace() != "tool-{account}" || k.Clusters[0].CreateNamespaces() || !k.Clusters[1].CreateNamespaces() {
		t.Errorf("namespace settings: %q %v %v", k.Clusters[0].ToolNamespace(), k.Clusters[0].CreateNamespaces(), k.Clusters[1].CreateNamespaces())
	}
}

func TestKubeValidate(t *testing.T) {
	t.Parallel()
	base := func() Config {
		c := Default()
		c.SSH.HostKeys = []string{"/k"}
		c.Directory.File = "/users.yaml"
		c.Backend.Type = "kube"
		c.Kube.DefaultProject = "tools"
		c.Kube.Pod.Image = "shell@sha256:00"
		c.Kube.Clusters = []KubeCluster{{Name: "tools", Kubeconfig: "/k.kubeconfig"}}
		return c
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   []string // every one must be reported
	}{
		{"valid", func(*Config) {}, nil},
		{"no clusters", func(c *Config) { c.Kube.Clusters = nil; c.Kube.DefaultProject = "" },
			[]string{"kube.clusters: at least one cluster"}},
		{"cluster faults", func(c *Config) {
			c.Kube.Clusters = append(c.Kube.Clusters, KubeCluster{Name: "Tools_2"}, KubeCluster{Name: "tools", Kubeconfig: "/x"})
		}, []string{"kube.clusters[1].name: \"Tools_2\" must be a lower-case DNS label", "kube.clusters[1].kubeconfig: required", "kube.clusters[2].name: \"tools\" is used"}},
		{"bad templates", func(c *Config) {
			c.Kube.Clusters[0].Namespace = KubeNamespace{Tool: "tool-{acount}", User: "Users_{account}"}
		}, []string{"kube.clusters[0].namespace.tool: unknown placeholder", "kube.clusters[0].namespace.user: \"Users_{account}\" does not make valid namespace names"}},
		{"pod faults", func(c *Config) {
			c.Kube.Pod = KubePod{ImagePullPolicy: "Sometimes", CPURequest: "2", CPULimit: "1", MemoryLimit: "lots",
				Home: KubeHome{Type: "nfs", Path: "relative", SubPath: "../x"}, Tolerations: []KubeToleration{{Operator: "Maybe"}},
				Labels: map[string]string{"app.kubernetes.io/managed-by": "me"}}
		}, []string{"kube.clusters[0].pod.image: required", "image_pull_policy: must be", "cpu_request: 2 is more than cpu_limit 1",
			"memory_limit: \"lots\" is not a quantity", "home.server: required", "home.path: \"relative\" must be", "home.sub_path", "tolerations[0].operator", "is set by bastion itself"}},
		{"projects", func(c *Config) { c.Kube.DefaultProject = "nosuch"; c.Kube.ProjectGroupPattern = "project" },
			[]string{"kube.default_project: \"nosuch\" is not the name of a cluster", "kube.project_group_pattern: \"project\" must contain {project}"}},
		{"nobody has a project", func(c *Config) { c.Kube.DefaultProject = "" }, []string{"set default_project or project_group_pattern"}},
		{"durations and rates", func(c *Config) {
			c.Kube.IdleTimeout, c.Kube.StartTimeout, c.Kube.QPS, c.Kube.Burst = 0, -time.Second, 0, 0
		}, []string{"kube.idle_timeout: must be positive", "kube.start_timeout: must be positive", "kube.qps", "kube.burst"}},
		{"detached work", func(c *Config) { c.Kube.DetachedMaxAge = -time.Hour }, []string{"kube.detached_max_age: must not be negative"}},
		{"detached work shorter than idle", func(c *Config) { c.Kube.DetachedMaxAge = time.Minute },
			[]string{"kube.detached_max_age: 1m0s is shorter than idle_timeout (30m0s)"}},
		{"detached work keeps nothing", func(c *Config) { c.Kube.DetachedMaxAge = 0 }, nil},
		{"replica id", func(c *Config) { c.Kube.ReplicaID = "a b" }, []string{"kube.replica_id"}},
		{"credentials kind", func(c *Config) { c.Kube.Pod.Credentials = "token" },
			[]string{"kube.clusters[0].pod.credentials: must be serviceaccount or none, not \"token\""}},
		{"credentials settings", func(c *Config) {
			c.Kube.Pod.CredentialsClusterRole = "a/b"
			c.Kube.Pod.CredentialsTokenLifetime = 5 * time.Minute
			c.Kube.Clusters[0].Pod.CredentialsAPIServer = "http://10.96.0.1"
		}, []string{"kube.clusters[0].pod.credentials_cluster_role: \"a/b\" is not a ClusterRole name",
			"kube.clusters[0].pod.credentials_token_lifetime: must be between 10m and 24h", "not 5m0s",
			"kube.clusters[0].pod.credentials_api_server: \"http://10.96.0.1\" must be an https URL"}},
		{"credentials: empty role, long token, API server with a path", func(c *Config) {
			c.Kube.Pod.CredentialsClusterRole = ""
			c.Kube.Pod.CredentialsTokenLifetime = 48 * time.Hour
			c.Kube.Pod.CredentialsAPIServer = "https://api.example/k8s"
		}, []string{"credentials_cluster_role: \"\" is not a ClusterRole name", "not 48h0m0s", "credentials_api_server: \"https://api.example/k8s\""}},
		{"credentials in a shared namespace", func(c *Config) {
			c.Kube.Clusters[0].Namespace = KubeNamespace{Tool: "tools", User: "{project}-people"}
		}, []string{"kube.clusters[0].namespace.tool: \"tools\" is shared by every account", "kube.clusters[0].namespace.user: \"{project}-people\" is shared"}},
		{"no credentials: shared namespaces and any other credentials keys are fine", func(c *Config) {
			c.Kube.Clusters[0].Namespace = KubeNamespace{Tool: "tools", User: "people"}
			c.Kube.Pod.Credentials = "none"
			c.Kube.Pod.CredentialsClusterRole = ""
			c.Kube.Pod.CredentialsAPIServer = ""
		}, nil},
		{"credentials turned off per cluster", func(c *Config) {
			c.Kube.Clusters[0].Namespace = KubeNamespace{Tool: "tools", User: "people"}
			c.Kube.Clusters[0].Pod.Credentials = "none"
		}, nil},
		{"kube section ignored for local", func(c *Config) { c.Backend.Type = "local"; c.Kube.Clusters = nil }, nil},
		{"unknown backend", func(c *Config) { c.Backend.Type = "docker" }, []string{"backend.type: must be local or kube"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := base()
			tt.change(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
		})
	}
}

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kubeYAML is the worked example of the README's Kubernetes section.
const kubeYAML = `
ssh:
  listen: ":22"
  host_keys: [/etc/bastion/ssh_host_ed25519_key]
directory:
  type: ldap
ldap:
  urls: [ldaps://ldap-ro.example.org]
  base_dn: dc=example,dc=org
backend:
  type: kube
forwarding:
  allow: ["db.example.org:3306"]   # dialled from the bastion
kube:
  project_group_pattern: "project-{project}"
  default_project: tools
  idle_timeout: 30m
  start_timeout: 60s
  qps: 50
  burst: 100
  pod:
    image: registry.example.org/toolforge/shell@sha256:4b8a0c9f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccd
    cpu_request: 100m
    cpu_limit: 300m
    memory_request: 256Mi
    memory_limit: 1Gi
    pids_limit: 100
    home:
      type: nfs
      server: nfs.example.org
      path: "{home}"
    priority_class_name: interactive
    node_selector: {pool: shells}
    tolerations:
      - {key: shells, operator: Exists, effect: NoSchedule}
  clusters:
    - name: tools
      kubeconfig: kube/tools.kubeconfig
    - name: deployment-prep
      kubeconfig: kube/deployment-prep.kubeconfig
      namespace:
        tool: "{project}-tool-{account}"
        user: "{project}-user-{account}"
        create: true
      pod:
        memory_limit: 2Gi
        home: {type: pvc, claim: homes, sub_path: "{account}"}
`

func TestKubeWorkedExample(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "bastion.yaml")
	if err := os.WriteFile(path, []byte(kubeYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
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
		{"replica id", func(c *Config) { c.Kube.ReplicaID = "a b" }, []string{"kube.replica_id"}},
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

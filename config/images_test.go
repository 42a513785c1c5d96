package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// Fallback images and pre-flight settings: parsed, inherited key by key,
// validated, and a tag among the fallbacks draws a warning.
func TestKubeFallbackImages(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte(`
ssh: {host_keys: [/k]}
directory: {file: /users.yaml}
backend: {type: kube}
kube:
  default_project: tools
  preflight:
    namespace: "bastion-{project}"
    timeout: 20s
  pod:
    image: r/shell@sha256:0003
    fallback_images: [r/shell@sha256:0002, "r/shell:previous"]
  clusters:
    - name: tools
      kubeconfig: /k
    - name: paws
      kubeconfig: /k
      pod:
        image: r/paws@sha256:0001
        fallback_images: [r/paws:old]
    - name: quarry
      kubeconfig: /k
      pod:
        fallback_images: []
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	k := cfg.Kube
	if got := k.Images(k.Clusters[0]); !slices.Equal(got, []string{"r/shell@sha256:0003", "r/shell@sha256:0002", "r/shell:previous"}) {
		t.Errorf("tools images %q", got)
	}
	if got := k.Images(k.Clusters[1]); !slices.Equal(got, []string{"r/paws@sha256:0001", "r/paws:old"}) {
		t.Errorf("paws images %q", got)
	}
	if got := k.Images(k.Clusters[2]); !slices.Equal(got, []string{"r/shell@sha256:0003"}) {
		t.Errorf("quarry (no fallbacks) images %q", got)
	}
	if k.Preflight.Namespace != "bastion-{project}" || k.Preflight.Timeout != 20*time.Second || k.Preflight.RetryInterval != time.Minute {
		t.Errorf("preflight %+v", k.Preflight)
	}
	warnings := strings.Join(k.FallbackWarnings(), "\n")
	for _, w := range []string{
		`kube.pod.fallback_images[1]: "r/shell:previous" is a tag, not a digest; pin it (repo@sha256:...)`,
		`kube.clusters[1].pod.fallback_images[0]: "r/paws:old" is a tag, not a digest`,
	} {
		if !strings.Contains(warnings, w) {
			t.Errorf("missing warning %q in:\n%s", w, warnings)
		}
	}
	if n := len(k.FallbackWarnings()); n != 2 {
		t.Errorf("%d warnings, want 2 (pinned fallbacks draw none):\n%s", n, warnings)
	}
}

func TestKubeFallbackValidate(t *testing.T) {
	t.Parallel()
	c := Default()
	c.SSH.HostKeys = []string{"/k"}
	c.Directory.File = "/users.yaml"
	c.Backend.Type = "kube"
	c.Kube.DefaultProject = "tools"
	c.Kube.Pod.Image = "shell@sha256:00"
	c.Kube.Pod.FallbackImages = []string{"shell@sha256:01", "", "shell@sha256:00", "shell@sha256:01", "a b"}
	c.Kube.Clusters = []KubeCluster{{Name: "tools", Kubeconfig: "/k.kubeconfig"}}
	c.Kube.Preflight = KubePreflight{Namespace: "Bad_{project}", Timeout: 0, RetryInterval: -time.Second}
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{
		`kube.clusters[0].pod.fallback_images[1]: "" is not an image reference`,
		`kube.clusters[0].pod.fallback_images[2]: "shell@sha256:00" is the primary image itself`,
		`kube.clusters[0].pod.fallback_images[3]: "shell@sha256:01" is listed twice`,
		`kube.clusters[0].pod.fallback_images[4]: "a b" is not an image reference`,
		"kube.preflight.timeout: must be positive",
		"kube.preflight.retry_interval: must not be negative",
		`kube.preflight.namespace: "Bad_{project}" is not a valid namespace name`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}

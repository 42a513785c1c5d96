package kube

import (
	"regexp"
	"strings"
	"testing"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
)

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func TestPodNames(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", auth.MaxNameLen)
	names := []string{"alice", "Alice", "ALICE", "a.lice", "a-lice", "a_lice", "a--lice", "_x", "tools.mytool", "tools-mytool", long, long[:63] + "y", "9"}
	seen := map[string]string{}
	for _, n := range names {
		p := podName("tools", n)
		if !dns1123.MatchString(p) || len(p) > 63 {
			t.Errorf("podName(%q) = %q: not a DNS-1123 label of at most 63", n, p)
		}
		if other, dup := seen[p]; dup {
			t.Errorf("%q and %q share pod %s", n, other, p)
		}
		seen[p] = n
		if again := podName("tools", n); again != p {
			t.Errorf("podName(%q) is not deterministic: %q, %q", n, p, again)
		}
		if podName("other", n) == p {
			t.Errorf("podName(%q) is the same in two projects", n)
		}
	}
	if got := podName("tools", "alice"); !strings.HasPrefix(got, "shell-alice-") {
		t.Errorf("podName(alice) = %q, want it to read shell-alice-HASH", got)
	}
}

func TestNamespaces(t *testing.T) {
	t.Parallel()
	c := config.KubeCluster{Name: "tools"}
	tests := []struct {
		name   string
		user   string
		acct   string
		want   string
		isTool bool
	}{
		{"person", "alice", "alice", "user-alice", false},
		{"tool", "alice", "tools.mytool", "tool-mytool", true},
		{"upper case gets a hash", "Alice", "Alice", "user-alice-", false},
		{"dots get a hash", "a.b", "a.b", "user-a-b-", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := who(&auth.User{Account: auth.Account{Name: tt.user}}, auth.Account{Name: tt.acct}, "tools.", "tools")
			if id.isTool != tt.isTool {
				t.Errorf("isTool = %v", id.isTool)
			}
			got := namespaceFor(c, id)
			if !strings.HasPrefix(got, tt.want) || !dns1123.MatchString(got) {
				t.Errorf("namespace %q, want %q...", got, tt.want)
			}
			if strings.HasSuffix(tt.want, "-") && got == strings.TrimSuffix(tt.want, "-") {
				t.Errorf("namespace %q has no hash", got)
			}
		})
	}
	if a, b := expandNamespace("user-{account}", "p", "Alice"), expandNamespace("user-{account}", "p", "alice"); a == b {
		t.Errorf("Alice and alice share namespace %s", a)
	}
	long := expandNamespace("{project}-user-{account}", "project", strings.Repeat("a", 64))
	if len(long) > 63 || !dns1123.MatchString(long) {
		t.Errorf("long namespace %q", long)
	}
}

func TestParseTarget(t *testing.T) {
	t.Parallel()
	shapes := []nsShape{shapeOf("tool-{account}", "tools"), shapeOf("user-{account}", "tools")}
	tests := []struct {
		host string
		ok   bool
		want target
	}{
		{"web", true, target{name: "web"}},
		{"web.tool-mytool", true, target{name: "web", namespace: "tool-mytool"}},
		{"web.tool-mytool.svc", true, target{name: "web", namespace: "tool-mytool"}},
		{"web.tool-mytool.svc.cluster.local", true, target{name: "web", namespace: "tool-mytool"}},
		{"web.tool-mytool.svc.cluster.local.", true, target{name: "web", namespace: "tool-mytool"}},
		{"WEB.Tool-MyTool", true, target{name: "web", namespace: "tool-mytool"}},
		{"db.other.svc", true, target{name: "db", namespace: "other"}},
		{"localhost", false, target{}},
		{"db.example", false, target{}},
		{"db.example.org", false, target{}},
		{"10.0.0.1", false, target{}},
		{"::1", false, target{}},
		{"web.tool-", false, target{}},
		{"a_b", false, target{}},
		{"", false, target{}},
	}
	for _, tt := range tests {
		got, ok := parseTarget(tt.host, "cluster.local", shapes)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseTarget(%q) = %+v, %v; want %+v, %v", tt.host, got, ok, tt.want, tt.ok)
		}
	}
}

func TestProjectOf(t *testing.T) {
	t.Parallel()
	cfg := &config.Kube{
		Clusters:            []config.KubeCluster{{Name: "tools"}, {Name: "deployment-prep"}},
		ProjectGroupPattern: "project-{project}",
	}
	tests := []struct {
		groups []string
		def    string
		want   string
		ok     bool
	}{
		{[]string{"project-tools"}, "", "tools", true},
		{[]string{"project-deployment-prep", "project-tools"}, "", "tools", true}, // config order
		{[]string{"project-deployment-prep"}, "", "deployment-prep", true},
		{[]string{"project-nosuch", "wikidev"}, "", "", false},
		{[]string{"project-"}, "", "", false},
		{nil, "tools", "tools", true},
	}
	for _, tt := range tests {
		cfg.DefaultProject = tt.def
		got, ok := projectOf(cfg, &auth.User{Groups: tt.groups})
		if got != tt.want || ok != tt.ok {
			t.Errorf("groups %v default %q: %q %v, want %q %v", tt.groups, tt.def, got, ok, tt.want, tt.ok)
		}
	}
}

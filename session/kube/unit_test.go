package kube

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session"
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

func TestIdleVerdict(t *testing.T) {
	t.Parallel()
	now := time.Now()
	const idle, stale, start = 30 * time.Minute, 3 * time.Minute, time.Minute
	ready := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	pod := func(age time.Duration, status corev1.PodStatus, entries map[string]string) *corev1.Pod {
		a := map[string]string{}
		for r, v := range entries {
			a[annoSessionsPrefix+r] = v
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(now.Add(-age)), Annotations: a}, Status: status}
	}
	at := func(d time.Duration, n int) string { return sessionValue(n, now.Add(-d)) }
	tests := []struct {
		name string
		pod  *corev1.Pod
		reap bool
	}{
		{"new and unused", pod(time.Minute, ready, nil), false},
		{"old and never used", pod(time.Hour, ready, nil), true},
		{"other replica has sessions", pod(time.Hour, ready, map[string]string{"b": at(time.Minute, 2)}), false},
		{"other replica's count is stale", pod(5*time.Hour, ready, map[string]string{"b": at(4*time.Hour, 2)}), true},
		{"stale but recent activity", pod(5*time.Hour, ready, map[string]string{"b": at(10*time.Minute, 2)}), false},
		{"last session ended long ago", pod(5*time.Hour, ready, map[string]string{"b": at(time.Hour, 0)}), true},
		{"last session ended recently", pod(5*time.Hour, ready, map[string]string{"b": at(time.Minute, 0)}), false},
		{"own entry is ignored", pod(5*time.Hour, ready, map[string]string{"self": at(time.Second, 3)}), false},
		{"own old entry", pod(5*time.Hour, ready, map[string]string{"self": at(time.Hour, 3)}), true},
		{"ended", pod(time.Minute, corev1.PodStatus{Phase: corev1.PodFailed}, nil), true},
		{"never ready", pod(3*time.Minute, corev1.PodStatus{Phase: corev1.PodPending}, nil), true},
		{"starting", pod(10*time.Second, corev1.PodStatus{Phase: corev1.PodPending}, nil), false},
		{"garbage annotation", pod(time.Hour, ready, map[string]string{"b": "{not json"}), true},
	}
	for _, tt := range tests {
		got := idleVerdict(tt.pod, "self", now, idle, stale, start)
		if (got != "") != tt.reap {
			t.Errorf("%s: verdict %q, want reap=%v", tt.name, got, tt.reap)
		}
	}
}

func TestPodSpec(t *testing.T) {
	t.Parallel()
	k := config.Default().Kube
	k.Pod.Image = "registry.example/shell@sha256:0123"
	k.Pod.Home = config.KubeHome{Type: "nfs", Server: "nfs.example", Path: "/srv/homes/{account}"}
	k.Pod.NodeSelector = map[string]string{"pool": "shells"}
	k.Pod.Tolerations = []config.KubeToleration{{Key: "shells", Operator: "Exists", Effect: "NoSchedule"}}
	k.Pod.PriorityClassName = "interactive"
	c := config.KubeCluster{Name: "tools", Pod: config.KubePod{Home: config.KubeHome{Type: "pvc", Claim: "homes", SubPath: "{account}"}}}
	cl := newCluster(&k, c)
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
	if !strings.Contains(pod.Annotations[annoPasswd], "alice:x:5001:500::/home/alice:/bin/bash\n") {
		t.Errorf("passwd %q", pod.Annotations[annoPasswd])
	}
	if pod.Labels[labelManagedBy] != managedBy || pod.Labels[labelProject] != "tools" || pod.Annotations[annoAccount] != "alice" {
		t.Errorf("labels %v annotations %v", pod.Labels, pod.Annotations)
	}
	if pod.Name != podName("tools", "alice") || pod.Namespace != "user-alice" {
		t.Errorf("name %s/%s", pod.Namespace, pod.Name)
	}
	// Same input, same hash; another image, another hash.
	if again := podSpec(cl, who(u, u.Account, "tools.", "tools"), "user-alice"); again.Annotations[annoSpecHash] != pod.Annotations[annoSpecHash] {
		t.Error("spec hash is not stable")
	}
	k.Pod.Image = "registry.example/shell@sha256:4567"
	if other := podSpec(newCluster(&k, c), who(u, u.Account, "tools.", "tools"), "user-alice"); other.Annotations[annoSpecHash] == pod.Annotations[annoSpecHash] {
		t.Error("spec hash ignores the image")
	}
}

func TestSessionCommand(t *testing.T) {
	t.Parallel()
	r := session.Request{
		Account: auth.Account{Name: "alice", Shell: "/bin/bash"},
		Command: "echo hi",
		Env:     map[string]string{"LANG": "C.UTF-8", "LC_ALL": "C", "HOME": "/evil", "BASTION_SESSION": "x", "BAD NAME": "1", "PATH": "/evil"},
		TTY:     &session.TTY{Term: "xterm"},
	}
	argv := sessionCommand(r, "tok", 100)
	want := []string{"/bin/sh", "-c", wrapperScript, "bastion-session", "tok", "/bin/bash", "echo hi", "100", "LANG=C.UTF-8", "LC_ALL=C", "TERM=xterm"}
	if !slices.Equal(argv, want) {
		t.Errorf("argv %q\nwant %q", argv[3:], want[3:])
	}
}

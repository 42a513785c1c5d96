package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
)

// The kube soak's size. The defaults are the quick run of the README's
// test command; docs/reliability.md has the full run's command:
//
//	go test -run TestSoakKube -timeout 40m ./bench -args -kube.accounts 100 -kube.per 3 -kube.duration 10m -kube.interval 1m -kube.out ../docs/reliability.md
var (
	kubeAccounts  = flag.Int("kube.accounts", 10, "TestSoakKube: accounts, each with its own pod and namespace")
	kubePer       = flag.Int("kube.per", 2, "TestSoakKube: concurrent sessions per account")
	kubeDuration  = flag.Duration("kube.duration", time.Minute, "TestSoakKube: how long the load runs")
	kubeInterval  = flag.Duration("kube.interval", 10*time.Second, "TestSoakKube: one report row per interval")
	kubeLoginRate = flag.Float64("kube.login-rate", 2, "TestSoakKube: new logins per second, each running echo in its account's pod")
	kubeRamp      = flag.Float64("kube.ramp", 5, "TestSoakKube: sessions opened per second at the start")
	kubeOut       = flag.String("kube.out", "", "TestSoakKube: replace the kube-soak block of this markdown file with the report")
)

// kubeSoak is the kube soak's world on the real test cluster: a static
// directory of accounts (one key for all), bastion's own ServiceAccount
// with deploy/rbac's roles, a tool namespace with an echo Service that
// every account maintains, and the soak's options for it.
type kubeSoak struct {
	client  kubernetes.Interface
	project string
	// kubeconfig is bastion's identity (its ServiceAccount's token).
	kubeconfig string
	toolNS     string
	opt        soakOptions
	// chaos: pods are deleted or outlive a bastion, so the counters of
	// one process do not add up to one pod per account.
	chaos bool
	// reapedEarly is bastion_pods_reaped_total when every session first
	// ran its command (-1: that moment never came): a pod made by a
	// login's command before its account's first session arrived, and
	// idle for kube.idle_timeout, is reaped then, as designed.
	reapedEarly atomic.Int64
}

// shellSelector selects the run's shell pods.
func (k *kubeSoak) shellSelector() string {
	return "app.kubernetes.io/component=shell,bastion.io/project=" + k.project
}

// idleTimeout is kube.idle_timeout in the soak's bastion: short, so the
// run sees its pods reaped.
const kubeSoakIdle = 15 * time.Second

func startKubeSoak(t *testing.T, accounts int, args ...string) *kubeSoak {
	t.Helper()
	admin, client := kubetest.Client(t)
	var b [3]byte
	_, _ = rand.Read(b[:])
	k := &kubeSoak{client: client, project: "soak" + hex.EncodeToString(b[:])}
	sys := kubetest.Namespace(t, client)
	id := kubeenv.Bastion(t, admin, client, sys, kubeenv.WithNamespaces(), kubeenv.WithFlowSchema())
	k.kubeconfig = id.Kubeconfig
	kubeenv.Cleanup(t, client, k.project)

	// The tool every account maintains, with its echo Service: the
	// target of the ssh -L streams.
	k.toolNS = k.project + "-tool-soak"
	_, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   k.toolNS,
		Labels: map[string]string{kubetest.ManagedByLabel: kubetest.ManagedBy, "bastion.io/project": k.project},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubetest.EchoService(t, client, k.toolNS, 52000, map[string]string{"bastion.io/project": k.project})

	// The accounts: one key for all.
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "soak.pub")
	if err := os.WriteFile(pub, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	var users strings.Builder
	users.WriteString("users:\n")
	var names []string
	for i := range accounts {
		name := fmt.Sprintf("soak%03d", i)
		names = append(names, name)
		fmt.Fprintf(&users, "  - {name: %s, uid: %d, gid: %d, home: /home/%s, shell: /bin/sh, groups: [tools.soak], key_files: [%s]}\n",
			name, 61000+i, 61000+i, name, pub)
	}
	usersFile := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(usersFile, []byte(users.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	opt, err := parseSoakFlags(append([]string{"-openssh", "0"}, args...), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	opt.keep = os.Getenv("BASTION_SOAK_KEEP") != "" // bastion's log, to see why
	opt.backend = "kube"
	opt.block = "kube-soak"
	opt.directory = "directory:\n  type: static\n  file: " + usersFile + "\n"
	opt.user, opt.signer, opt.accounts = names[0], signer, names
	opt.forwardTo = "echo." + k.toolNS + ".svc:80"
	opt.loginCommand = "echo ok"
	opt.extraConfig = fmt.Sprintf(`backend:
  type: kube
forwarding:
  allow: ["*.svc:*"]
kube:
  default_project: %[1]s
  idle_timeout: %[2]s
  sweep_interval: 1s
  heartbeat_interval: 5s
  start_timeout: 120s
  pod:
    image: %[3]s
    image_pull_policy: Never
    helper_image: %[3]s
    cpu_request: 1m
    cpu_limit: "1"
    memory_request: 16Mi
    memory_limit: 256Mi
    termination_grace_period: 2s
  clusters:
    - name: %[1]s
      kubeconfig: %[4]s
      namespace:
        tool: "{project}-tool-{account}"
        user: "{project}-user-{account}"
        create: true`, k.project, kubeSoakIdle, kubetest.ShellImage, id.Kubeconfig)
	opt.observe = k.observe
	opt.finalCheck = k.finalCheck
	k.reapedEarly.Store(-1)
	opt.allRunning = func(m map[string]float64) { k.reapedEarly.Store(int64(m["bastion_pods_reaped_total"])) }
	k.opt = opt
	return k
}

// pods counts the run's shell pods by phase.
func (k *kubeSoak) pods(ctx context.Context) (map[corev1.PodPhase]int, int, error) {
	list, err := k.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: k.shellSelector()})
	if err != nil {
		return nil, 0, err
	}
	phases := map[corev1.PodPhase]int{}
	for _, p := range list.Items {
		phases[p.Status.Phase]++
	}
	return phases, len(list.Items), nil
}

// observe is the report row's cluster column: the shell pods there are,
// and bastion's pod and API counters.
func (k *kubeSoak) observe(ctx context.Context, m map[string]float64) string {
	phases, n, err := k.pods(ctx)
	live := fmt.Sprint(n)
	if err != nil {
		live = "? (" + err.Error() + ")"
	} else if n != phases[corev1.PodRunning] {
		live = fmt.Sprintf("%d (%d running)", n, phases[corev1.PodRunning])
	}
	return fmt.Sprintf("%s pods; %.0f started, %.0f reaped, %.0f API errors",
		live, m["bastion_pod_start_duration_seconds_count"], m["bastion_pods_reaped_total"], m["bastion_kube_api_errors_total"])
}

// finalCheck waits for the reaper to delete every idle pod, then says
// what the cluster holds: no shell pod may be left.
func (k *kubeSoak) finalCheck(ctx context.Context, metrics func(context.Context) (map[string]float64, error)) (notes, problems []string) {
	wctx, cancel := context.WithTimeout(ctx, kubeSoakIdle+90*time.Second)
	defer cancel()
	start := time.Now()
	err := kubeenv.WaitNoPods(wctx, k.client, k.shellSelector())
	reaped := time.Since(start)
	_, left, lerr := k.pods(ctx)
	if err != nil || lerr != nil || left != 0 {
		problems = append(problems, fmt.Sprintf("%d shell pods left %s after the load (kube.idle_timeout %s): %v %v", left, reaped.Round(time.Second), kubeSoakIdle, err, lerr))
	}
	// No pre-flight probe pod may be left either (bastion deletes each
	// once it has its answer, and sweeps those a killed process left).
	probes, err := k.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=preflight,bastion.io/project=" + k.project})
	if err != nil || len(probes.Items) != 0 {
		n := -1
		if err == nil {
			n = len(probes.Items)
		}
		problems = append(problems, fmt.Sprintf("%d pre-flight probe pods left: %v", n, err))
	}
	// The counters once the reaper is done.
	m, err := metrics(ctx)
	if err != nil {
		problems = append(problems, "read bastion's metrics: "+err.Error())
	}
	nss, err := k.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: "bastion.io/project=" + k.project})
	var names []string
	if err == nil {
		for _, ns := range nss.Items {
			names = append(names, ns.Name)
		}
	}
	slices.Sort(names)
	shown := names
	if len(shown) > 4 {
		shown = append(slices.Clone(shown[:2]), "…", shown[len(shown)-1])
	}
	created, started, reapedN := m["bastion_pods_created_total"], m["bastion_pod_start_duration_seconds_count"], m["bastion_pods_reaped_total"]
	notes = append(notes,
		fmt.Sprintf("Pods (bastion's metrics): %.0f created, %.0f starts timed, %.0f reaped after kube.idle_timeout %s, for %d accounts; every other session and login reused its account's running pod. %d shell pods left %s after the load ended. Kubernetes API errors counted by bastion: %.0f.",
			created, started, reapedN, kubeSoakIdle, len(k.opt.accounts), left, reaped.Round(time.Second), m["bastion_kube_api_errors_total"]),
		fmt.Sprintf("Namespaces of the run at the end (deleted by the test afterwards): %d (%s).", len(names), strings.Join(shown, ", ")))
	if !k.chaos {
		problems = append(problems, onePodPerAccount(len(k.opt.accounts), created, started, reapedN, k.reapedEarly.Load())...)
	}
	return notes, problems
}

// onePodPerAccount checks bastion's pod counters at the end of a kube
// soak without faults: every pod made is timed once (not once per
// session that waited for it, as before issue 15's kube soak) and reaped
// once idle; each account has one pod for all its sessions, plus at most
// the pods reaped before its sessions all ran (reapedEarly, -1: they
// never all ran): a login's command may make an account's pod before
// the account's first session arrives, and that pod is reaped after
// kube.idle_timeout, as designed. A pod reaped while the account's
// sessions were open, or a second pod for an account, is a problem.
func onePodPerAccount(accounts int, created, started, reaped float64, reapedEarly int64) []string {
	var problems []string
	if created != started || created != reaped {
		problems = append(problems, fmt.Sprintf("bastion created %.0f pods, timed %.0f starts and reaped %.0f pods; want the same number of each", created, started, reaped))
	}
	extra := created - float64(accounts)
	switch {
	case extra < 0:
		problems = append(problems, fmt.Sprintf("bastion created %.0f pods for %d accounts; want one per account", created, accounts))
	case extra == 0:
	case reapedEarly < 0:
		problems = append(problems, fmt.Sprintf("bastion created %.0f pods for %d accounts, and not every session ran", created, accounts))
	case extra > float64(reapedEarly):
		problems = append(problems, fmt.Sprintf("bastion created %.0f pods for %d accounts; only %d were reaped before every session ran, so %.0f accounts got a second pod while their sessions were open", created, accounts, reapedEarly, extra-float64(reapedEarly)))
	}
	return problems
}

// The kube soak: accounts × sessions held on the real test cluster
// (pty and exec cat in each account's pod, ssh -L to a tool's Service)
// with logins running a command in the pods on top; every byte checked,
// every pod reaped at the end.
func TestSoakKube(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the test cluster and runs bastion under load for over a minute; skipped under -short")
	}
	args := []string{"-sessions", fmt.Sprint(*kubeAccounts * *kubePer), "-duration", kubeDuration.String(),
		"-interval", kubeInterval.String(), "-login-rate", fmt.Sprint(*kubeLoginRate), "-ramp", fmt.Sprint(*kubeRamp)}
	k := startKubeSoak(t, *kubeAccounts, args...)
	k.opt.command = fmt.Sprintf("go test -run TestSoakKube -timeout 40m ./bench -args -kube.accounts %d -kube.per %d -kube.duration %s -kube.interval %s -kube.login-rate %g -kube.ramp %g",
		*kubeAccounts, *kubePer, *kubeDuration, *kubeInterval, *kubeLoginRate, *kubeRamp)
	rep := k.run(t)
	if *kubeOut != "" {
		if err := replaceBlock(*kubeOut, k.opt.block, rep.markdown()); err != nil {
			t.Error(err)
		}
	}
}

// run runs the soak and fails the test on any problem.
func (k *kubeSoak) run(t *testing.T) *soakReport {
	t.Helper()
	var out bytes.Buffer
	rep, err := soak(t.Context(), k.opt, &out)
	if err != nil {
		t.Fatalf("soak: %v\n%s", err, out.String())
	}
	t.Logf("\n%s", rep.markdown())
	if p := rep.problems(); len(p) > 0 {
		t.Errorf("the kube soak found problems:\n%s\nprogress:\n%s", strings.Join(p, "\n"), out.String())
	}
	var moved int64
	for _, kd := range rep.kinds[:3] {
		if kd.sessions == 0 {
			t.Errorf("no %s traffic ran", kd.kind)
		}
		moved += kd.ok
	}
	if moved == 0 || rep.loginOK == 0 {
		t.Errorf("nothing was moved (%d bytes) or no login made (%d)", moved, rep.loginOK)
	}
	return rep
}

func TestOnePodPerAccount(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		created, started, reaped float64
		early                    int64
		problem                  string // in the only problem; "": none
	}{
		{name: "one each", created: 100, started: 100, reaped: 100, early: 0},
		{name: "one each, sessions never all ran", created: 10, started: 10, reaped: 10, early: -1},
		{name: "4 made by logins before the sessions, reaped then", created: 104, started: 104, reaped: 104, early: 4},
		{name: "more reaped early than made again", created: 102, started: 102, reaped: 102, early: 5},
		{name: "a second pod under open sessions", created: 104, started: 104, reaped: 104, early: 3, problem: "1 accounts got a second pod"},
		{name: "extra pods, sessions never all ran", created: 11, started: 11, reaped: 11, early: -1, problem: "not every session ran"},
		{name: "a start timed twice", created: 100, started: 101, reaped: 100, problem: "timed 101 starts"},
		{name: "a pod never reaped", created: 100, started: 100, reaped: 99, problem: "reaped 99 pods"},
		{name: "an account without a pod", created: 99, started: 99, reaped: 99, problem: "want one per account"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			accounts := 100
			if tc.created < 50 {
				accounts = 10
			}
			got := onePodPerAccount(accounts, tc.created, tc.started, tc.reaped, tc.early)
			switch {
			case tc.problem == "" && len(got) != 0:
				t.Errorf("problems %q, want none", got)
			case tc.problem != "" && (len(got) != 1 || !strings.Contains(got[0], tc.problem)):
				t.Errorf("problems %q, want one with %q", got, tc.problem)
			}
		})
	}
}

package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// userMsg is the user-facing line of err, or fails the test.
func userMsg(t testing.TB, err error) string {
	t.Helper()
	msg, ok := session.UserMessage(err)
	if !ok {
		t.Fatalf("error %v carries no message for the user", err)
	}
	return msg
}

// A dropped session leaves no process behind, with and without a TTY,
// including background jobs in other process groups.
func TestNoLingeringProcesses(t *testing.T) {
	e := newEnv(t)
	b := e.backend(t, e.config())
	u := person("linger", 4301, kubeenv.Home(t, 4301, 4301))
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) {
			marker := fmt.Sprint(100000 + rand.IntN(800000)) // a valid duration for sleep
			ctx, cancel := context.WithCancel(t.Context())
			var out sessiontest.SyncBuffer
			pr, pw := io.Pipe()
			defer pw.Close()
			r := session.Request{User: u, Account: u.Account, Stdin: pr, Stdout: &out, Stderr: &out,
				Command: fmt.Sprintf("set -m; sleep %s & (sleep %s; true) & echo started; sleep %s", marker, marker, marker)}
			if tty {
				r.TTY = &session.TTY{Term: "xterm", Size: session.WindowSize{Cols: 80, Rows: 24}}
			}
			done := make(chan error, 1)
			go func() { _, err := b.Run(ctx, r); done <- err }()
			waitFor(t, &out, "started", time.Minute)
			if n := countProcs(t, b, u, marker); n < 3 {
				t.Fatalf("%d sleep processes while the session runs, want 3", n)
			}
			cancel() // as when the SSH connection drops
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
			if n := countProcs(t, b, u, marker); n != 0 {
				t.Errorf("%d of the session's processes are left after it was cut", n)
			}
		})
	}
}

// countProcs counts the processes in u's pod whose command line has marker.
func countProcs(t testing.TB, b *Backend, u *auth.User, marker string) int {
	t.Helper()
	out, errOut, st, err := runCmd(t, b, u, nil, `for d in /proc/[0-9]*; do tr '\0' ' ' < $d/cmdline 2>/dev/null; echo; done | grep -c "^sleep `+marker+`" || true`, "")
	if err != nil || st.Code != 0 {
		t.Fatalf("count processes: %v %+v %s", err, st, errOut)
	}
	var n int
	fmt.Sscan(out, &n)
	return n
}

// Sessions of one account share one pod, concurrently and across two
// replicas; other accounts, however alike their names, get their own.
func TestPodReuseAndIsolation(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	b1 := e.backend(t, cfg)
	b2 := e.backend(t, cfg)
	home := kubeenv.Home(t, 4401, 4401)
	alice := person("alice", 4401, home)

	var wg sync.WaitGroup
	hosts := make([]string, 4)
	for i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := b1
			if i%2 == 1 {
				b = b2
			}
			out, errOut, st, err := runCmd(t, b, alice, nil, "uname -n; cat /proc/1/stat | cut -d' ' -f22", "")
			if err != nil || st.Code != 0 {
				t.Errorf("session %d: %v %+v %s", i, err, st, errOut)
			}
			hosts[i] = out
		}()
	}
	wg.Wait()
	for i := range hosts {
		if hosts[i] == "" || hosts[i] != hosts[0] {
			t.Fatalf("four concurrent sessions on two replicas saw pods %q", hosts)
		}
	}
	if shells := e.shellPods(t); len(shells) != 1 {
		t.Fatalf("%d shell pods, want 1", len(shells))
	}

	// Look-alike names: each its own pod, as its own uid.
	others := []*auth.User{person("Alice", 4402, home), person("a.lice", 4403, home), person("a-lice", 4404, home)}
	for _, o := range others {
		out, errOut, st, err := runCmd(t, b1, o, nil, "uname -n; id -u", "")
		if err != nil || st.Code != 0 {
			t.Fatalf("%s: %v %+v %s", o.Name, err, st, errOut)
		}
		if out == hosts[0] || !strings.HasSuffix(out, fmt.Sprintf("%d\n", o.UID)) {
			t.Errorf("%s ran in %q (alice's pod: %q)", o.Name, out, hosts[0])
		}
	}
	if shells := e.shellPods(t); len(shells) != 4 {
		t.Errorf("%d shell pods, want 4", len(shells))
	}
}

// An account can never reach another account's pod: not through its
// namespace, not by naming it in a shared namespace, and a pod whose
// annotations say it is someone else's is never entered.
func TestOtherAccountsPods(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	b := e.backend(t, cfg)
	alice := person("alice", 4501, kubeenv.Home(t, 4501, 4501))
	bob := person("bob", 4502, kubeenv.Home(t, 4502, 4502))
	if _, _, st, err := runCmd(t, b, bob, nil, "true", ""); err != nil || st.Code != 0 {
		t.Fatalf("bob: %v %+v", err, st)
	}
	bobPod := e.shellPods(t)[0]
	bobNS := bobPod.Namespace

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req := session.Request{User: alice, Account: alice.Account}
	for _, dest := range []string{bobPod.Name + "." + bobNS + ":22", "anything." + bobNS + ".svc:80", bobPod.Name + "." + bobNS + ".svc.cluster.local:80"} {
		if _, err := b.Dial(ctx, req, "tcp", dest); err == nil || !strings.Contains(userMsg(t, err), "not allowed") {
			t.Errorf("alice dialled %s: %v", dest, err)
		}
	}

	// One namespace for everybody: bob's shell pod is there, but alice may
	// not forward to it.
	shared := cfg
	shared.Clusters = append(shared.Clusters[:0:0], cfg.Clusters...)
	shared.Clusters[0].Namespace.User = e.project + "-shells"
	sb := e.backend(t, shared)
	if _, _, st, err := runCmd(t, sb, bob, nil, "true", ""); err != nil || st.Code != 0 {
		t.Fatalf("bob in the shared namespace: %v %+v", err, st)
	}
	bobShared := podName(e.project, "bob")
	if _, err := sb.Dial(ctx, req, "tcp", bobShared+":8080"); err == nil || !strings.Contains(userMsg(t, err), "another account's shell") {
		t.Errorf("alice forwarded to bob's pod in the shared namespace: %v", err)
	}

	// A pod under alice's name that is not hers (as if the hash collided,
	// or her uid changed) is refused, not entered.
	impostor := podSpec(sb.clusters[e.project], who(bob, bob.Account, "tools.", e.project), e.project+"-shells")
	impostor.Name = podName(e.project, "alice")
	if _, err := e.client.CoreV1().Pods(impostor.Namespace).Create(t.Context(), impostor, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := runCmd(t, sb, alice, nil, "true", ""); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("alice used a pod that belongs to bob: %v", err)
	}

	// Nothing alice did touched bob's pods.
	for _, p := range e.shellPods(t) {
		if p.Annotations[pods.AnnoAccount] == "bob" && p.DeletionTimestamp != nil {
			t.Errorf("bob's pod %s/%s is being deleted", p.Namespace, p.Name)
		}
	}
	got, err := e.client.CoreV1().Pods(bobNS).Get(t.Context(), bobPod.Name, metav1.GetOptions{})
	if err != nil || got.UID != bobPod.UID {
		t.Errorf("bob's pod changed: %v", err)
	}
}

// A pod with no sessions is reaped after the idle timeout; one in use is
// not.
func TestIdleReaping(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.IdleTimeout = 3 * time.Second
	cfg.SweepInterval = 500 * time.Millisecond
	cfg.HeartbeatInterval = time.Second
	b := e.backend(t, cfg)
	u := person("idle", 4601, kubeenv.Home(t, 4601, 4601))
	// A session longer than the idle timeout keeps its pod.
	if _, _, st, err := runCmd(t, b, u, nil, "sleep 6", ""); err != nil || st.Code != 0 {
		t.Fatalf("long session: %v %+v", err, st)
	}
	shells := e.shellPods(t)
	if len(shells) != 1 || shells[0].DeletionTimestamp != nil {
		t.Fatalf("the pod was reaped under a session: %d pods", len(shells))
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kubeenv.WaitNoPods(ctx, e.client, pods.ShellPodsOf(e.project)); err != nil {
		t.Fatalf("idle pod not reaped: %v", err)
	}
	t.Logf("idle pod gone %v after its last session", time.Since(start).Round(100*time.Millisecond))
	// The next login makes a new one.
	if out, _, _, err := runCmd(t, b, u, nil, "echo back", ""); err != nil || out != "back\n" {
		t.Errorf("after reaping: %q %v", out, err)
	}
}

// A pod left by a dead replica (a fresh-looking count that is never
// refreshed) is reaped once its heartbeat is stale.
func TestDeadReplicaPodReaped(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.IdleTimeout = 2 * time.Second
	cfg.SweepInterval = 500 * time.Millisecond
	cfg.HeartbeatInterval = time.Second
	b := e.backend(t, cfg)
	u := person("orphan", 4701, kubeenv.Home(t, 4701, 4701))
	if _, _, _, err := runCmd(t, b, u, nil, "true", ""); err != nil {
		t.Fatal(err)
	}
	pod := e.shellPods(t)[0]
	// A crashed replica: it said it had 2 sessions, and then nothing.
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:"{\"n\":2,\"t\":%d}"}}}`, pods.AnnoSessionsPrefix+"crashed-replica", time.Now().Unix())
	if _, err := e.client.CoreV1().Pods(pod.Namespace).Patch(t.Context(), pod.Name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kubeenv.WaitNoPods(ctx, e.client, pods.ShellPodsOf(e.project)); err != nil {
		t.Fatalf("orphaned pod not reaped: %v", err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("reaped after %v, before the dead replica's heartbeat went stale (3s)", d)
	}
}

// A missing image: the user reads why within seconds, the failure is
// counted, and the pod is deleted.
func TestMissingImage(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Pod.Image = "bastion.test/missing:test"
	b := e.backend(t, cfg)
	u := person("noimage", 4801, kubeenv.Home(t, 4801, 4801))
	start := time.Now()
	var out sessiontest.SyncBuffer
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := b.Run(ctx, session.Request{User: u, Account: u.Account, Stdin: strings.NewReader(""), Stdout: &out,
		TTY: &session.TTY{Term: "xterm", Size: session.WindowSize{Cols: 80, Rows: 24}}})
	took := time.Since(start)
	msg := userMsg(t, err)
	if !strings.Contains(msg, "the shell image bastion.test/missing:test is not available") || !strings.Contains(msg, "administrators have been alerted") {
		t.Errorf("message %q", msg)
	}
	if took > 10*time.Second {
		t.Errorf("the message took %v, want under 10s", took)
	}
	if !strings.Contains(out.String(), "starting your shell in "+e.project) {
		t.Errorf("no progress line in %q", out.String())
	}
	if n := b.StartFailures()["ErrImageNeverPull"]; n != 1 {
		t.Errorf("start failures %v", b.StartFailures())
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer wcancel()
	if err := kubeenv.WaitNoPods(wctx, e.client, pods.ShellPodsOf(e.project)); err != nil {
		t.Errorf("the pod that cannot start was left behind: %v", err)
	}
	t.Logf("reported in %v: %s", took.Round(time.Millisecond), msg)
}

// A start that never completes (the home directory does not exist, so
// the volume never mounts) ends at the start timeout, and the pod goes.
func TestStartTimeout(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.StartTimeout = 4 * time.Second
	b := e.backend(t, cfg)
	u := person("nohome", 4851, "/nonexistent/bastion-test-home")
	_, _, _, err := runCmd(t, b, u, nil, "true", "")
	if msg := userMsg(t, err); !strings.Contains(msg, "did not start within 4s") {
		t.Errorf("message %q", msg)
	}
	wctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kubeenv.WaitNoPods(wctx, e.client, pods.ShellPodsOf(e.project)); err != nil {
		t.Errorf("the pod was left behind: %v", err)
	}
}

// The pod deleted under a session: the session ends saying so, and the
// next session gets a new pod.
func TestPodDeletedMidSession(t *testing.T) {
	e := newEnv(t)
	b := e.backend(t, e.config())
	u := person("deleted", 4901, kubeenv.Home(t, 4901, 4901))
	var out sessiontest.SyncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := b.Run(t.Context(), session.Request{User: u, Account: u.Account, Command: "echo started; sleep 600",
			Stdin: strings.NewReader(""), Stdout: &out, Stderr: io.Discard})
		done <- err
	}()
	waitFor(t, &out, "started", time.Minute)
	pod := e.shellPods(t)[0]
	if err := e.client.CoreV1().Pods(pod.Namespace).Delete(t.Context(), pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if msg := userMsg(t, err); !strings.Contains(msg, "was deleted") || !strings.Contains(msg, "log in again") {
			t.Errorf("message %q", msg)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the session did not end when its pod was deleted")
	}
	out2, _, _, err := runCmd(t, b, u, nil, "echo again", "")
	if err != nil || out2 != "again\n" {
		t.Fatalf("next session: %q %v", out2, err)
	}
	shells := e.shellPods(t)
	if len(shells) != 1 || shells[0].UID == pod.UID {
		t.Errorf("want one new pod, have %d", len(shells))
	}
}

// The API server down: a clear message, nothing made; back up: it works.
// The kubeconfig is reloaded when it changes (here: another server).
func TestAPIServerDownAndKubeconfigReload(t *testing.T) {
	e := newEnv(t, kubeenv.WithProxy())
	b := e.backend(t, e.config())
	u := person("down", 5101, kubeenv.Home(t, 5101, 5101))
	if out, _, _, err := runCmd(t, b, u, nil, "echo up", ""); err != nil || out != "up\n" {
		t.Fatalf("through the proxy: %q %v", out, err)
	}
	e.id.Proxy.Down()
	other := person("down2", 5102, kubeenv.Home(t, 5102, 5102))
	for _, who := range []*auth.User{u, other} {
		start := time.Now()
		_, _, _, err := runCmd(t, b, who, nil, "echo up", "")
		if msg := userMsg(t, err); msg != fmt.Sprintf("the cluster for project %s is unavailable; try again in a few minutes", e.project) {
			t.Errorf("%s with the API server down: %q", who.Name, msg)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("%s waited %v for the message", who.Name, d)
		}
	}
	_, err := b.Dial(t.Context(), session.Request{User: u, Account: u.Account}, "tcp", "web:80")
	if msg := userMsg(t, err); !strings.Contains(msg, "unavailable") {
		t.Errorf("dial with the API server down: %q", msg)
	}
	e.id.Proxy.Up(t)
	if out, _, _, err := runCmd(t, b, other, nil, "echo back", ""); err != nil || out != "back\n" {
		t.Fatalf("API server back: %q %v", out, err)
	}
	if shells := e.shellPods(t); len(shells) != 2 {
		t.Errorf("%d pods, want 2 (one per account, none leaked)", len(shells))
	}

	// Point the kubeconfig at the API server itself (a new token too), then
	// take the proxy down for good: sessions go on without a restart.
	e.id.WriteKubeconfig(t, e.id.Server())
	time.Sleep(pods.ReloadCheck + 100*time.Millisecond)
	e.id.Proxy.Down()
	if out, _, _, err := runCmd(t, b, u, nil, "echo reloaded", ""); err != nil || out != "reloaded\n" {
		t.Fatalf("after the kubeconfig changed: %q %v", out, err)
	}
}

// A person in no project is refused with a clear line.
func TestNoProject(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.DefaultProject = ""
	cfg.ProjectGroupPattern = "project-{project}"
	b := e.backend(t, cfg)
	u := person("stranger", 5201, "/tmp")
	_, _, _, err := runCmd(t, b, u, nil, "true", "")
	if msg := userMsg(t, err); !strings.Contains(msg, "stranger is not a member of any project") {
		t.Errorf("message %q", msg)
	}
	u.Groups = []string{"project-" + e.project}
	u.Home = kubeenv.Home(t, 5201, 5201)
	if out, _, _, err := runCmd(t, b, u, nil, "echo in", ""); err != nil || out != "in\n" {
		t.Errorf("member: %q %v", out, err)
	}
}

// ssh -L from a person to a Service in the namespace of a tool they
// maintain, and not to one of a tool they do not.
func TestForwardToToolService(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	b := e.backend(t, cfg)
	alice := person("alice", 5301, kubeenv.Home(t, 5301, 5301))
	alice.Tools = []string{"mytool"}
	toolID := who(alice, auth.Account{Name: "tools.mytool"}, cfg.ToolPrefix, e.project)
	ns := e.namespace(t, cfg, toolID)
	e.echoService(t, ns)
	req := session.Request{User: alice, Account: alice.Account}
	for _, dest := range []string{"echo." + ns + ":80", "echo." + ns + ".svc.cluster.local:80", "echo." + ns + ":8080"} {
		t.Run(dest, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			c, err := b.Dial(ctx, req, "tcp", dest)
			if strings.HasSuffix(dest, ":8080") {
				// The Service has no port 8080; the pod name "echo" is not
				// tried when a Service of that name exists.
				if err == nil {
					c.Close()
					t.Fatal("dialled a port the Service does not have")
				}
				if msg := userMsg(t, err); !strings.Contains(msg, "has no TCP port 8080") {
					t.Errorf("message %q", msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, "ping\n"); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 5)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
				t.Fatalf("echo: %q %v", buf, err)
			}
		})
	}
	alice.Tools = nil
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := b.Dial(ctx, req, "tcp", "echo."+ns+":80"); err == nil || !errors.Is(err, err) || !strings.Contains(userMsg(t, err), "not allowed") {
		t.Errorf("a non-maintainer forwarded into %s: %v", ns, err)
	}
	if _, err := b.Dial(ctx, req, "tcp", "nosuch:80"); err == nil || !strings.Contains(userMsg(t, err), "no Service or pod nosuch") {
		t.Errorf("unknown name: %v", err)
	}
}

// A pod no node can take: the user reads why within seconds, and the pod
// goes.
func TestUnschedulable(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Pod.NodeSelector = map[string]string{"bastion.test/no-such-node": "true"}
	b := e.backend(t, cfg)
	u := person("nonode", 5401, kubeenv.Home(t, 5401, 5401))
	start := time.Now()
	_, _, _, err := runCmd(t, b, u, nil, "true", "")
	if msg := userMsg(t, err); !strings.Contains(msg, "no node in "+e.project+" has room for your shell") {
		t.Errorf("message %q", msg)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	wctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kubeenv.WaitNoPods(wctx, e.client, pods.ShellPodsOf(e.project)); err != nil {
		t.Errorf("the pod was left behind: %v", err)
	}
}

// SSH signal requests reach the session's process; the pod is locked
// down (no privileges, no capabilities, read-only root, no token).
func TestSignalsAndLockdown(t *testing.T) {
	e := newEnv(t)
	b := e.backend(t, e.config())
	u := person("locked", 5501, kubeenv.Home(t, 5501, 5501))
	sigs := make(chan session.Signal, 1)
	var out sessiontest.SyncBuffer
	done := make(chan session.ExitStatus, 1)
	go func() {
		st, err := b.Run(t.Context(), session.Request{User: u, Account: u.Account, Signals: sigs,
			Command: `trap 'echo got-INT; exit 5' INT; echo ready; while :; do sleep 0.1; done`,
			Stdin:   strings.NewReader(""), Stdout: &out, Stderr: &out})
		if err != nil {
			t.Error(err)
		}
		done <- st
	}()
	waitFor(t, &out, "ready", time.Minute)
	sigs <- "INT"
	select {
	case st := <-done:
		if st.Code != 5 || !strings.Contains(out.String(), "got-INT") {
			t.Errorf("status %+v output %q", st, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the signal did not arrive")
	}

	out2, errOut, _, err := runCmd(t, b, u, nil, `grep -E '^(NoNewPrivs|CapEff|Seccomp):' /proc/self/status | tr -s '\t' ' '
touch /probe 2>/dev/null && echo root-writable
test -e /var/run/secrets/kubernetes.io/serviceaccount/token && echo token
touch /tmp/ok /var/tmp/ok && echo tmp-writable
id -un`, "")
	if err != nil {
		t.Fatal(err, errOut)
	}
	want := "CapEff: 0000000000000000\nNoNewPrivs: 1\nSeccomp: 2\ntmp-writable\nlocked\n"
	if out2 != want {
		t.Errorf("lockdown:\n%s\nwant:\n%s", out2, want)
	}
}

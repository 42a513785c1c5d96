package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
)

// podIn is the world's shell pod in namespace ns, or nil.
func (w *kubeWorld) podIn(t *testing.T, ns string) *corev1.Pod {
	t.Helper()
	for _, p := range w.pods(t) {
		if p.Namespace == ns && p.DeletionTimestamp == nil {
			return &p
		}
	}
	return nil
}

// Detached work keeps its pod (issue 14): alice leaves a tmux session
// running and logs out, and reads that it keeps her shell; bob leaves
// nothing. Past the idle timeout bob's pod is reaped and alice's is kept
// (the metric says so); a bastion killed with SIGKILL and started again
// keeps it too (the decision is in the cluster, not in bastion's memory),
// and `tmux ls` in a new session still lists her session; past
// kube.detached_max_age after her last session the pod is reaped.
func TestKubeDetachedWorkKeepsPod(t *testing.T) {
	const idle, maxAge = 3 * time.Second, 30 * time.Second
	w := startKubeWorld(t, kubeOptions{idleTimeout: idle.String(), detachedMaxAge: maxAge.String(), ops: true})
	aliceNS, bobNS := w.ns("user", "alice"), w.ns("user", "bob")

	out, errOut, code := w.ssh(t, w.bast, "alice", "alice-1", "", "-tt", "--",
		"tmux new -d -s work 'sleep 100000' && nohup sleep 100001 >/dev/null 2>&1 & setsid sleep 100002 </dev/null >/dev/null 2>&1 & sleep 1; echo started")
	if code != 0 || !strings.Contains(out, "started") {
		t.Fatalf("tmux new: exit %d %q %q", code, out, errOut)
	}
	notice := "keep your shell in " + w.project + " running for up to 30s after you log out"
	if !strings.Contains(out, "bastion: ") || !strings.Contains(out, "detached process") || !strings.Contains(out, notice) {
		t.Errorf("no logout notice about the detached processes in %q", out)
	}
	if out, _, code := w.ssh(t, w.bast, "bob", "bob-1", "", "-tt", "--", "echo hi"); code != 0 || !strings.Contains(out, "hi") || strings.Contains(out, "detached") {
		t.Errorf("bob, with nothing detached: exit %d %q", code, out)
	}
	loggedOut := time.Now()

	// Without detached work the pod goes at the idle timeout, as before.
	waitFor(t, "bob's idle pod reaped", 30*time.Second, func() bool { return w.podIn(t, bobNS) == nil })
	time.Sleep(time.Until(loggedOut.Add(idle + 4*time.Second)))
	p := w.podIn(t, aliceNS)
	if p == nil {
		t.Fatalf("alice's pod, with tmux running, was reaped %v after her logout (idle timeout %v)\nlog:\n%s", time.Since(loggedOut).Round(time.Second), idle, w.bast.logs())
	}
	var rec struct{ N int }
	if err := json.Unmarshal([]byte(p.Annotations["bastion.io/detached"]), &rec); err != nil || rec.N < 1 {
		t.Errorf("alice's pod's bastion.io/detached annotation %q", p.Annotations["bastion.io/detached"])
	}
	_, metrics := httpGet(t, w.bast.opsURL(t)+"/metrics")
	if v := metricValue(t, metrics, "bastion_pods_kept_detached", `cluster="`+w.project+`"`); v != 1 {
		t.Errorf("bastion_pods_kept_detached %v, want 1", v)
	}

	// A bastion killed without a chance to clean up, then a new one.
	if err := w.bast.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-w.bast.done
	s2 := w.serve(t)
	waitFor(t, "the new bastion's sweep keeping alice's pod", 20*time.Second, func() bool {
		return strings.Contains(s2.logs(), "keeping an idle shell pod for its detached processes")
	})
	if w.podIn(t, aliceNS) == nil || p.UID != w.podIn(t, aliceNS).UID {
		t.Fatalf("alice's pod went after the bastion restart\nlog:\n%s", s2.logs())
	}
	out, errOut, code = w.ssh(t, s2, "alice", "alice-1", "", "--", "tmux ls; ps -eo args")
	if code != 0 || !strings.HasPrefix(out, "work: ") {
		t.Fatalf("tmux ls after the restart: exit %d %q %q", code, out, errOut)
	}
	for _, p := range []string{"sleep 100000", "sleep 100001", "sleep 100002"} {
		if !strings.Contains(out, p) {
			t.Errorf("%q (tmux, nohup, setsid) is not running after the restart:\n%s", p, out)
		}
	}
	if np := w.podIn(t, aliceNS); np == nil || np.UID != p.UID {
		t.Fatal("tmux ls ran in a new pod")
	}
	last := time.Now()

	// Past detached_max_age after the last session, it is reaped anyway.
	time.Sleep(time.Until(last.Add(maxAge - 8*time.Second)))
	if w.podIn(t, aliceNS) == nil {
		t.Fatalf("alice's pod was reaped %v after her last session, before detached_max_age (%v)", time.Since(last).Round(time.Second), maxAge)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kubeenv.WaitNoPods(ctx, w.client, "app.kubernetes.io/component=shell,bastion.io/project="+w.project); err != nil {
		t.Fatalf("alice's pod not reaped after detached_max_age: %v", err)
	}
	t.Logf("reaped %v after the last session", time.Since(last).Round(100*time.Millisecond))
	if took := time.Since(last); took < maxAge-time.Second {
		t.Errorf("reaped %v after the last session, before detached_max_age %v", took, maxAge)
	}
	waitFor(t, "the reason in the log", 10*time.Second, func() bool {
		return strings.Contains(s2.logs(), "past kube.detached_max_age (30s)")
	})
}

// Exit signals with the kube backend and bastion-helper (issue 14 item
// 6), through the real bastion binary: OpenSSH's client receives
// exit-signal, and asyncssh reads the signal's name, as from sshd.
func TestKubeExitSignal(t *testing.T) {
	if out, err := exec.Command("/usr/bin/python3", "-c", "import asyncssh").CombinedOutput(); err != nil {
		t.Skipf("python3-asyncssh is not installed (scripts/test installs it): %v\n%s", err, out)
	}
	w := startKubeWorld(t, kubeOptions{podKeys: "    helper_image: " + kubetest.ShellImage + "\n"})
	_, errOut, code := w.ssh(t, w.bast, "alice", "alice-1", "", "-o", "LogLevel=DEBUG", "--", "kill -TERM $$")
	if code != 255 || !strings.Contains(errOut, "rtype exit-signal") {
		t.Errorf("ssh 'kill -TERM $$': exit %d, want 255 and an exit-signal request; stderr:\n%s", code, errOut)
	}
	script := filepath.Join(w.dir, "exitsignal.py")
	if err := os.WriteFile(script, []byte(exitSignalScript), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/bin/python3", "-W", "ignore", script, w.bast.port, "alice", w.key(t, "alice-1"),
		"kill -TERM $$", "kill -KILL $$", "exit 143", "true").CombinedOutput()
	if err != nil {
		t.Fatalf("asyncssh: %v\n%s", err, out)
	}
	want := "'kill -TERM $$' -1 ('TERM', False)\n'kill -KILL $$' -1 ('KILL', False)\n'exit 143' 143 None\n'true' 0 None\n"
	if string(out) != want {
		t.Errorf("asyncssh read\n%s\nwant\n%s", out, want)
	}

	// With the helper, an interactive login shell runs under
	// bastion-helper run, beside its own become socket's relay: its
	// logout notice sees the tmux it started.
	tty, _, code := w.ssh(t, w.bast, "alice", "alice-1", "tmux new -d -s work 'sleep 100000' && echo started\nexit\n", "-tt")
	if code != 0 || !strings.Contains(tty, "started") || !strings.Contains(tty, "bastion: ") || !strings.Contains(tty, "your shell in "+w.project+" running for up to 7 days after you log out") {
		t.Errorf("tmux in a login shell with the helper: exit %d %q, want the logout notice", code, tty)
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var kubeChaos = flag.Bool("kube.chaos", false, "run TestChaosKube (it stops the shared test cluster's API server)")

// clusterPID is the PID of a test cluster component as
// integration/cluster/up records it.
func clusterPID(t *testing.T, component string) int {
	t.Helper()
	data, err := os.ReadFile("/var/lib/bastion-test-cluster/pids/" + component + ".pid")
	if err != nil {
		t.Fatalf("%s's PID: %v", component, err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(data))[0])
	if err != nil {
		t.Fatalf("%s's PID: %v", component, err)
	}
	return pid
}

// chaosPhase is what the chaos run is doing to the world now, and so
// which session ends and login refusals are expected.
type chaosPhase struct {
	mu     sync.Mutex
	victim string // the account whose pod was deleted
	api    bool   // the API server is (or was moments ago) stopped
	down   bool   // bastion was killed: every session ends
	all    bool   // a cluster component restarts: every session may end
	any    bool   // ... and a login may read anything (recorded)
}

func (p *chaosPhase) set(f func(*chaosPhase)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *chaosPhase) cut(account string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down || p.all || account == p.victim
}

func (p *chaosPhase) login(err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := err.Error()
	switch {
	case p.any:
		return true
	case p.victim != "" && strings.Contains(msg, "was deleted; log in again"):
		// A login of the victim's, its command running in the pod as
		// it was deleted (only the victim's pod was).
		return true
	case p.api:
		// The one line a person reads while the cluster does not answer.
		return strings.Contains(msg, "is unavailable")
	case p.down:
		return strings.Contains(msg, "connection refused") || strings.Contains(msg, "EOF") || strings.Contains(msg, "reset by peer")
	}
	return false
}

// restartComponent runs integration/cluster/restart. The component it
// starts again must not become this process's child: the soak is a
// subreaper and kills what is left below it at the end.
func restartComponent(ctx context.Context, args ...string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	defer func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }()
	out, err := exec.CommandContext(ctx, filepath.Join(root, "integration", "cluster", "restart"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("integration/cluster/restart %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// drainBastion sends bastion SIGTERM under load: its readiness must be
// false at once, and it must exit within limits.shutdown_grace (2 s in
// the soak's config) and a little.
func drainBastion(ctx context.Context, w *soakWorld) (time.Duration, error) {
	start := time.Now()
	if err := w.srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return 0, err
	}
	// Ready no more within 200 ms (an ops server that stopped listening
	// is not ready either).
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	ready := true
	for time.Since(start) < 200*time.Millisecond && ready {
		resp, err := client.Get("http://" + w.opsAddr + "/readyz")
		if err != nil {
			ready = false
			break
		}
		ready = resp.StatusCode == http.StatusOK
		resp.Body.Close()
	}
	var problems []string
	if ready {
		problems = append(problems, "/readyz still answered 200 200ms after SIGTERM")
	}
	select {
	case <-w.srv.done:
	case <-time.After(10 * time.Second):
		problems = append(problems, "bastion still running 10s after SIGTERM")
		w.srv.crash()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	took := time.Since(start)
	if took > 2*time.Second+1500*time.Millisecond {
		problems = append(problems, fmt.Sprintf("bastion took %s to exit after SIGTERM; limits.shutdown_grace is 2s", took))
	}
	if len(problems) > 0 {
		return took, errors.New(strings.Join(problems, "; "))
	}
	return took, nil
}

// toldText is what users read, one line per message.
func toldText(rep *soakReport) string {
	told := ""
	for msg, n := range rep.told {
		told += fmt.Sprintf("%d × %s\n", n, msg)
	}
	return told
}

// Chaos on the test cluster while a kube soak runs (issue 15): a user's
// pod deleted (that user's sessions end with the one-line reason, the
// others go on), the API server stopped by SIGSTOP for 12 s (running
// sessions stall and go on with every byte; logins meanwhile read that
// the cluster is unavailable and work again after, without a restart),
// and bastion killed with SIGKILL and started again (every session
// drops; logins work again at once; the new process reaps the pods the
// old one left, and no probe pod is left).
func TestChaosKube(t *testing.T) {
	if testing.Short() || !*kubeChaos {
		t.Skip("stops the test cluster's API server, which would break the tests of other packages running at the same time: run it alone with go test -run TestChaosKube ./bench -args -kube.chaos")
	}
	k := startKubeSoak(t, 10, "-sessions", "20", "-duration", "115s", "-interval", "10s", "-login-rate", "2", "-ramp", "5")
	k.chaos = true
	k.opt.command = "go test -run TestChaosKube ./bench"
	apiserver := clusterPID(t, "kube-apiserver")
	t.Cleanup(func() { _ = syscall.Kill(apiserver, syscall.SIGCONT) })
	var phase chaosPhase
	k.opt.expectCut, k.opt.expectedLogin = phase.cut, phase.login
	victim := k.opt.accounts[0]
	// Between faults, bastion's goroutines are back to what they were
	// with every session open before the first (ldapChaosSlack over it at
	// most), and no pre-flight probe pod is left.
	var baseline atomic.Int64 // set and read by the faults' goroutines
	settled := func(ctx context.Context, w *soakWorld) error {
		base := int(baseline.Load())
		low := settledGoroutines(ctx, w, base+ldapChaosSlack, 5*time.Second)
		t.Logf("bastion: %d goroutines (%d before the faults)", low, base)
		if low > base+ldapChaosSlack {
			return fmt.Errorf("bastion has %d goroutines, %d before the faults", low, base)
		}
		probes, err := k.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=preflight,bastion.io/project=" + k.project})
		if err != nil || len(probes.Items) != 0 {
			return fmt.Errorf("pre-flight probe pods left: %d, %v", len(probes.Items), err)
		}
		return nil
	}
	k.opt.faults = []soakFault{
		{at: 20 * time.Second, name: "(goroutines before the faults)", act: func(ctx context.Context, w *soakWorld) error {
			baseline.Store(int64(settledGoroutines(ctx, w, -1, 0)))
			t.Logf("bastion: %d goroutines with every session open", baseline.Load())
			return nil
		}},
		{at: 27 * time.Second, name: "the pod of " + victim + " deleted", act: func(ctx context.Context, _ *soakWorld) error {
			phase.set(func(p *chaosPhase) { p.victim = victim })
			list, err := k.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: k.shellSelector()})
			if err != nil {
				return err
			}
			for _, p := range list.Items {
				if p.Annotations["bastion.io/account"] == victim {
					return k.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{})
				}
			}
			return fmt.Errorf("no pod of %s", victim)
		}},
		{at: 40 * time.Second, name: "(goroutines after the pod's deletion)", act: settled},
		{at: 47 * time.Second, name: "kube-apiserver stopped (SIGSTOP)", do: func() {
			phase.set(func(p *chaosPhase) { p.api = true })
			_ = syscall.Kill(apiserver, syscall.SIGSTOP)
		}},
		{at: 59 * time.Second, name: "kube-apiserver continued (SIGCONT)", do: func() { _ = syscall.Kill(apiserver, syscall.SIGCONT) }},
		// Logins that started during the stop may still end now.
		{at: 72 * time.Second, name: "(logins must work again)", do: func() { phase.set(func(p *chaosPhase) { p.api = false }) }},
		{at: 74 * time.Second, name: "(goroutines after the API server's stop)", act: settled},
		{at: 82 * time.Second, name: "bastion killed (SIGKILL) and started again", act: func(ctx context.Context, w *soakWorld) error {
			phase.set(func(p *chaosPhase) { p.down = true })
			w.srv.crash()
			return w.srv.start(ctx)
		}},
	}
	rep := k.run(t)
	told := toldText(rep)
	if !strings.Contains(told, "was deleted; log in again to get a new one") {
		t.Errorf("no session of %s read why it ended; users read:\n%s", victim, told)
	}
	if !strings.Contains(told, "the cluster for project "+k.project+" is unavailable; try again in a few minutes") {
		t.Errorf("no login read that the cluster is unavailable while the API server was stopped; users read:\n%s", told)
	}
	if len(rep.faults) != 8 {
		t.Errorf("faults injected: %q", rep.faults)
	}
}

// A cluster component killed or restarted while a kube soak runs: the
// sessions, whose streams pass through it, may end (what their users
// read is recorded); logins meanwhile are refused with a line (recorded;
// for the API server, that the cluster is unavailable) and work again
// once it is back, without a bastion restart; the pods survive (no new
// one is made) and are reaped at the end.
func TestChaosKubeRestart(t *testing.T) {
	if testing.Short() || !*kubeChaos {
		t.Skip("kills the test cluster's components, which would break the tests of other packages running at the same time: run it alone with go test -run TestChaosKubeRestart ./bench -args -kube.chaos")
	}
	for _, tc := range []struct {
		name string
		args []string                                // of integration/cluster/restart
		act  func(context.Context, *soakWorld) error // or this
		want string                                  // a line some login or session must have read
		// Not one pod per account: while the API server is down,
		// sessions end and logins fail, an account may stay idle past
		// the soak's 15 s kube.idle_timeout, and its pod is reaped and
		// made anew by its next login.
		anyPods bool
	}{
		{name: "kube-apiserver killed", args: []string{"-s", "KILL", "-d", "5", "kube-apiserver"}, want: "is unavailable; try again in a few minutes", anyPods: true},
		// The CRI streaming server is in containerd: every exec stream
		// is cut, and with the helper (the soak's pods have it, as the
		// reference install's) bastion tells a cut from an exit.
		{name: "containerd restarted", args: []string{"containerd"}, want: "was lost; log in again"},
		{name: "bastion SIGTERMed", act: func(ctx context.Context, w *soakWorld) error {
			took, err := drainBastion(ctx, w)
			t.Logf("bastion drained and exited %s after SIGTERM (limits.shutdown_grace 2s)", took.Round(10*time.Millisecond))
			if err != nil {
				return err
			}
			return w.srv.start(ctx)
		}, want: "shutting down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := startKubeSoak(t, 10, "-sessions", "20", "-duration", "90s", "-interval", "10s", "-login-rate", "2", "-ramp", "5")
			// The pods survive a cluster component's restart: one per
			// account, made, timed and reaped once by the one bastion
			// process. A bastion restarted reaps what the first made.
			k.chaos = tc.act != nil || tc.anyPods
			k.opt.command = "go test -run TestChaosKubeRestart ./bench -args -kube.chaos"
			var phase chaosPhase
			k.opt.expectCut, k.opt.expectedLogin = phase.cut, phase.login
			back := make(chan struct{})
			k.opt.faults = []soakFault{
				{at: 40 * time.Second, name: tc.name + " (integration/cluster/restart " + strings.Join(tc.args, " ") + ")", act: func(ctx context.Context, w *soakWorld) error {
					phase.set(func(p *chaosPhase) { p.all, p.any = true, true })
					defer close(back)
					if tc.act != nil {
						return tc.act(ctx, w)
					}
					return restartComponent(ctx, tc.args...)
				}},
			}
			// Logins work again within 15 s of the component's return.
			var wg sync.WaitGroup
			defer wg.Wait()
			gctx, cancel := context.WithCancel(t.Context())
			defer cancel() // before wg.Wait
			wg.Go(func() {
				select {
				case <-back:
				case <-gctx.Done():
					return
				}
				select {
				case <-time.After(15 * time.Second):
					phase.set(func(p *chaosPhase) { p.any = false })
				case <-gctx.Done():
				}
			})
			rep := k.run(t)
			told := toldText(rep)
			t.Logf("users read:\n%s", told)
			if tc.want != "" && !strings.Contains(told, tc.want) {
				t.Errorf("no login read %q", tc.want)
			}
			if len(rep.faults) != 1 {
				t.Error("the fault was not injected")
			}
		})
	}
}

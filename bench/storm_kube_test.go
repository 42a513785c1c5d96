package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session/kube"
)

// stormStartTimeout bounds each pod's start in the login storm, the
// floor's and bastion's (kube.start_timeout).
const stormStartTimeout = 15 * time.Minute

var kubeStorm = flag.Int("kube.storm", 0, "TestLoginStormKube: accounts that log in at the same instant (0: skip the test)")

// apiserverRequests reads the API server's own request counters: every
// request, and those answered 429 (Too Many Requests).
func apiserverRequests(ctx context.Context, client kubernetes.Interface) (total, tooMany float64, err error) {
	body, err := client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("read the API server's /metrics: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		i := strings.LastIndex(line, " ")
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		total += v
		if strings.Contains(line, `code="429"`) {
			tooMany += v
		}
	}
	return total, tooMany, sc.Err()
}

// stormTimes sums up how long each of n took.
func stormTimes(d []time.Duration) string {
	slices.Sort(d)
	if len(d) == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %s, p90 %s, last %s", d[len(d)/2].Round(10*time.Millisecond),
		d[len(d)*9/10].Round(10*time.Millisecond), d[len(d)-1].Round(10*time.Millisecond))
}

// stormSummary sums up how long each took: p50, p90 and max.
func stormSummary(d []time.Duration, unit time.Duration) string {
	slices.Sort(d)
	if len(d) == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %s, p90 %s, max %s (%d)", d[len(d)/2].Round(unit),
		d[len(d)*9/10].Round(unit), d[len(d)-1].Round(unit), len(d))
}

// The login storm (issue 15): N accounts log in at the same instant on
// a cold cluster (no pod, no namespace), each running echo in its pod,
// against the floor: the very objects bastion makes (kube.ShellObjects:
// namespace, ServiceAccount, RoleBinding, pod), made by raw client-go
// with bastion's identity and client limits (kube.qps and burst), until
// each pod is Ready and echo ran in it. While bastion's storm runs, one
// more account with a warm pod logs in again and again (an interactive
// shell, to its prompt), against a raw client-go exec of its login shell
// in the same pod at the same moments; while the floor's runs, the same
// account's pod (made raw) gets the same two execs per round, both raw,
// so that both storms carry the same extra load. Each storm starts on a
// quiet machine (waitQuiet).
//
//	go test -run TestLoginStormKube -timeout 45m ./bench -args -kube.storm 200
func TestLoginStormKube(t *testing.T) {
	if testing.Short() || *kubeStorm == 0 {
		t.Skip("the login storm runs with -args -kube.storm N (N accounts at once on the test cluster)")
	}
	n := *kubeStorm
	// The last account is the warm one.
	k := startKubeSoak(t, n+1, "-sessions", "1", "-duration", "5s", "-login-rate", "0")
	// No pod is reaped while the storm runs (the floor's stay too), and
	// none is given up on: on this busy 2-core node the last of 200 pods
	// is Ready some minutes after its creation.
	k.opt.extraConfig = strings.Replace(k.opt.extraConfig, "idle_timeout: "+kubeSoakIdle.String(), "idle_timeout: 30m", 1)
	k.opt.extraConfig = strings.Replace(k.opt.extraConfig, "start_timeout: 120s", "start_timeout: "+stormStartTimeout.String(), 1)
	if !strings.Contains(k.opt.extraConfig, "helper_image") || !strings.Contains(k.opt.extraConfig, "idle_timeout: 30m") ||
		!strings.Contains(k.opt.extraConfig, "start_timeout: "+stormStartTimeout.String()) {
		t.Fatalf("the storm's config changes did not apply to:\n%s", k.opt.extraConfig)
	}
	cfg, err := config.Parse([]byte(k.opt.extraConfig))
	if err != nil {
		t.Fatal(err)
	}
	be, err := kube.New(t.Context(), kube.Config{Kube: cfg.Kube, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	users := make([]*auth.User, n+1)
	objs := make([]kube.ShellObjects, n+1)
	for i, name := range k.opt.accounts {
		users[i] = &auth.User{Account: auth.Account{Name: name, UID: 61000 + i, GID: 61000 + i, Home: "/home/" + name, Shell: "/bin/sh"},
			Groups: []string{"tools.soak"}}
		if objs[i], err = be.ShellObjects(users[i], users[i].Account); err != nil {
			t.Fatal(err)
		}
	}
	// The floor's client: bastion's identity and client limits.
	rc, err := clientcmd.BuildConfigFromFlags("", k.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = cfg.Kube.QPS, cfg.Kube.Burst
	fc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	client := k.client
	ownSel := "app.kubernetes.io/managed-by=bastion,bastion.io/project=" + k.project
	defer func() {
		// Nothing left: every namespace (and so every pod) bastion or
		// the floor made goes, and the run waits for it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 10*time.Minute)
		defer cancel()
		if err := deleteNamespaces(ctx, client, ownSel); err != nil {
			t.Errorf("clean-up: %v", err)
		}
	}()

	// The floor. Its storm carries the same exec load as bastion's: the
	// warm account's pod, made raw, gets two raw execs of the login shell
	// per round, where bastion's storm gets one through bastion and one raw.
	warm := k.opt.accounts[n]
	if err := floorLogin(t.Context(), rc, fc, objs[n]); err != nil {
		t.Fatalf("the floor's warm pod: %v", err)
	}
	warmPod, err := client.CoreV1().Pods(objs[n].Pod.Namespace).Get(t.Context(), objs[n].Pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitQuiet(t)
	req, tooMany, err := apiserverRequests(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	fctx, stopFloorWarm := context.WithCancel(t.Context())
	var fr1, fr2 []time.Duration
	var ferrs []error
	var warmWG sync.WaitGroup
	// The warm pod's raw prompt (warmPod is bastion's pod in its storm).
	raw := func(ctx context.Context) (time.Duration, error) {
		return rawPrompt(ctx, rc, fc, warmPod, users[n].Shell)
	}
	warmWG.Go(func() {
		first := func(ctx context.Context) (time.Duration, time.Duration, error) {
			d, err := raw(ctx)
			return d, d, err
		}
		fr1, _, fr2, ferrs = warmRounds(fctx, 0, first, raw)
	})
	start := time.Now()
	var mu sync.Mutex
	var floor []time.Duration
	var errs []error
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := floorLogin(t.Context(), rc, fc, objs[i])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			floor = append(floor, time.Since(start))
		})
	}
	wg.Wait()
	floorWall := time.Since(start)
	stopFloorWarm()
	warmWG.Wait()
	req2, tooMany2, err := apiserverRequests(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 {
		t.Fatalf("raw client-go: %d of %d logins failed, first: %v", len(errs), n, errs[0])
	}
	t.Logf("floor (raw client-go, kube.qps %g, burst %d): %d namespaces, ServiceAccounts, RoleBindings and pods Ready, echo run in each, in %s (%s); API server: %.0f requests (%.0f/s), %.0f answered 429",
		cfg.Kube.QPS, cfg.Kube.Burst, n, floorWall.Round(10*time.Millisecond), stormTimes(floor), req2-req, (req2-req)/floorWall.Seconds(), tooMany2-tooMany)
	t.Logf("warm pod during the floor's storm: raw client-go exec of %s -l, first of each round %s; second %s; %d failed",
		users[n].Shell, stormSummary(fr1, time.Millisecond), stormSummary(fr2, time.Millisecond), len(ferrs))
	// Cold again: the floor's namespaces go, and the run waits until they
	// are gone (bastion makes the same ones).
	cstart := time.Now()
	wctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	if err := deleteNamespaces(wctx, client, ownSel); err != nil {
		t.Fatalf("the floor's namespaces did not go: %v", err)
	}
	t.Logf("the floor's namespaces and pods gone in %s", time.Since(cstart).Round(time.Second))

	// bastion: every account logs in at once and runs echo in its pod.
	w, err := startSoakWorld(t.Context(), k.opt, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close(k.opt.keep)

	// The warm account's pod, and its prompt on a quiet cluster.
	if err := loginCommand(w.srv.addr(), w.clientConfig(warm), "echo ok"); err != nil {
		t.Fatalf("warm-up login %s: %v", warm, err)
	}
	if warmPod, err = client.CoreV1().Pods(objs[n].Pod.Namespace).Get(t.Context(), objs[n].Pod.Name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	viaBastion := func(ctx context.Context) (time.Duration, time.Duration, error) {
		return sshPrompt(ctx, w.srv.addr(), w.clientConfig(warm))
	}
	prompts := func(ctx context.Context, max int) ([]time.Duration, []time.Duration, []time.Duration, []error) {
		return warmRounds(ctx, max, viaBastion, raw)
	}
	quiet, _ := w.samples(t.Context())
	qb, qs, qr, qerrs := prompts(t.Context(), 10)
	if len(qerrs) > 0 {
		t.Fatalf("warm prompts on a quiet cluster: %v", errors.Join(qerrs...))
	}
	quietAfter, _ := w.samples(t.Context())
	t.Logf("warm login %s, quiet cluster: to the prompt through bastion %s; from the shell request %s; raw client-go exec of %s -l %s; bastion's pod PATCHes (the session's count) %s",
		warm, stormSummary(qb, time.Millisecond), stormSummary(qs, time.Millisecond), users[n].Shell, stormSummary(qr, time.Millisecond),
		patchSeconds(quietAfter).since(patchSeconds(quiet)))

	req, tooMany, err = apiserverRequests(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	waitQuiet(t)
	beforeSamples, _ := w.samples(t.Context())
	before := sums(beforeSamples)
	gate := make(chan struct{})
	var logins []time.Duration
	errs = nil
	for i := range n {
		wg.Go(func() {
			<-gate
			s := time.Now()
			err := loginCommand(w.srv.addr(), w.clientConfig(k.opt.accounts[i]), "echo ok")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", k.opt.accounts[i], err))
				return
			}
			logins = append(logins, time.Since(s))
		})
	}
	wctx, stopWarm := context.WithCancel(t.Context())
	var sb, ss, sr []time.Duration
	var serrs []error
	warmWG.Go(func() { sb, ss, sr, serrs = prompts(wctx, 0) })
	start = time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)
	stopWarm()
	warmWG.Wait()
	req2, tooMany2, err = apiserverRequests(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	afterSamples, _ := w.samples(t.Context())
	after := sums(afterSamples)
	t.Logf("bastion's pod PATCHes (the session's count: every login's before its exec, and at its end) during the storm: %s", patchSeconds(afterSamples).since(patchSeconds(beforeSamples)))
	starts := after["bastion_pod_start_duration_seconds_count"] - before["bastion_pod_start_duration_seconds_count"]
	startSum := after["bastion_pod_start_duration_seconds_sum"] - before["bastion_pod_start_duration_seconds_sum"]
	if starts > 0 {
		t.Logf("bastion's pods: creation to Ready %.1f s on average (bastion_pod_start_duration_seconds)", startSum/starts)
	}
	t.Logf("bastion: %d of %d logins printed ok in %s (%s); %.0f pods created, %.0f API errors; API server: %.0f requests (%.0f/s, kube.qps %g, burst %d, as bastion's own client limit), %.0f answered 429; bastion/floor: %.2f",
		len(logins), n, wall.Round(10*time.Millisecond), stormTimes(logins),
		after["bastion_pods_created_total"]-before["bastion_pods_created_total"],
		after["bastion_kube_api_errors_total"]-before["bastion_kube_api_errors_total"],
		req2-req, (req2-req)/wall.Seconds(), cfg.Kube.QPS, cfg.Kube.Burst, tooMany2-tooMany, wall.Seconds()/floorWall.Seconds())
	t.Logf("warm login %s during the storm: to the prompt through bastion %s; from the shell request %s; raw client-go exec of %s -l %s; %d failed",
		warm, stormSummary(sb, time.Millisecond), stormSummary(ss, time.Millisecond), users[n].Shell, stormSummary(sr, time.Millisecond), len(serrs))
	if len(errs) > 0 {
		t.Errorf("%d of %d logins failed, first: %v", len(errs), n, errs[0])
	}
	if len(serrs) > 0 {
		t.Errorf("%d warm prompts failed, first: %v", len(serrs), serrs[0])
	}
}

// warmRounds logs in to the warm pod again and again, max times (0: until
// ctx ends): each round a first prompt (through bastion: from the dial and
// from the shell request), then the raw exec's, then 200 ms.
func warmRounds(ctx context.Context, max int, first func(context.Context) (time.Duration, time.Duration, error),
	raw func(context.Context) (time.Duration, error)) (login, shell, rawd []time.Duration, errs []error) {
	for i := 0; max == 0 || i < max; i++ {
		if ctx.Err() != nil {
			break
		}
		// A prompt cut short by the end of the storm is no sample.
		l, s, err := first(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			errs = append(errs, fmt.Errorf("first: %w", err))
		default:
			login, shell = append(login, l), append(shell, s)
		}
		d, err := raw(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			errs = append(errs, fmt.Errorf("raw exec: %w", err))
		default:
			rawd = append(rawd, d)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return
}

// waitQuiet waits, before a storm, until this machine (the node, the
// control plane, and the test itself) is quiet: its CPUs at least 85 %
// idle over 5 s, so that the node's work on the last storm's pods
// (stopping and removing containers, unmounting) does not slow the next.
// It gives up after 5 minutes, and logs what it found.
func waitQuiet(t *testing.T) {
	t.Helper()
	const window, want, limit = 5 * time.Second, 0.85, 5 * time.Minute
	start := time.Now()
	idle0, total0 := cpuTimes(t)
	for {
		select {
		case <-t.Context().Done():
			return
		case <-time.After(window):
		}
		idle1, total1 := cpuTimes(t)
		frac := float64(idle1-idle0) / float64(max(1, total1-total0))
		idle0, total0 = idle1, total1
		if frac >= want || time.Since(start) > limit {
			t.Logf("before the storm: CPUs %.0f %% idle over %s, after waiting %s", 100*frac, window, time.Since(start).Round(time.Second))
			return
		}
	}
}

// cpuTimes reads the machine's idle (idle and iowait) and total CPU time
// from /proc/stat, in clock ticks.
func cpuTimes(t *testing.T) (idle, total uint64) {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		t.Fatalf("/proc/stat starts %q", line)
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("/proc/stat: %q", line)
		}
		total += n
		if i == 3 || i == 4 {
			idle += n
		}
	}
	return idle, total
}

// loginCommand logs in and runs command.
func loginCommand(addr string, cfg *ssh.ClientConfig, command string) error {
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	return runLoginCommand(c, command)
}

// floorLogin makes o's namespace, ServiceAccount, RoleBinding and pod
// with raw client-go, as fast as it can (a create each, no look first),
// watches the pod until it is Ready and runs echo in it.
func floorLogin(ctx context.Context, rc *rest.Config, client kubernetes.Interface, o kube.ShellObjects) error {
	ns := o.Pod.Namespace
	if _, err := client.CoreV1().Namespaces().Create(ctx, o.Namespace, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, o.ServiceAccount, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := client.RbacV1().RoleBindings(ns).Create(ctx, o.RoleBinding, metav1.CreateOptions{}); err != nil {
		return err
	}
	pod, err := client.CoreV1().Pods(ns).Create(ctx, o.Pod, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, stormStartTimeout)
	defer cancel()
	wi, err := client.CoreV1().Pods(ns).Watch(wctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", pod.Name).String(), ResourceVersion: pod.ResourceVersion})
	if err != nil {
		return err
	}
	defer wi.Stop()
	for ready := false; !ready; {
		select {
		case <-wctx.Done():
			return fmt.Errorf("pod %s/%s not Ready: %w", ns, pod.Name, wctx.Err())
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return fmt.Errorf("pod %s/%s: the watch ended", ns, pod.Name)
			}
			if p, isPod := ev.Object.(*corev1.Pod); isPod {
				pod = p
				if ready, err = kubetest.PodReady(p); err != nil {
					return err
				}
			}
		}
	}
	var out bytes.Buffer
	if err := rawExec(ctx, rc, client, pod, []string{"echo", "ok"}, nil, &out, false); err != nil {
		return fmt.Errorf("exec echo in %s/%s: %w", ns, pod.Name, err)
	}
	if out.String() != "ok\n" {
		return fmt.Errorf("exec echo in %s/%s printed %q", ns, pod.Name, out.String())
	}
	return nil
}

// rawExec runs command in pod's shell container over client-go's
// WebSocket executor.
func rawExec(ctx context.Context, rc *rest.Config, client kubernetes.Interface, pod *corev1.Pod, command []string, stdin io.Reader, stdout io.Writer, tty bool) error {
	u := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: pod.Spec.Containers[0].Name, Command: command,
			Stdin: stdin != nil, Stdout: true, Stderr: !tty, TTY: tty}, scheme.ParameterCodec).URL()
	ex, err := remotecommand.NewWebSocketExecutor(rc, http.MethodGet, u.String())
	if err != nil {
		return err
	}
	so := remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Tty: tty}
	if !tty {
		so.Stderr = io.Discard
	}
	return ex.StreamWithContext(ctx, so)
}

// firstOutput signals the first write.
type firstOutput struct {
	once sync.Once
	at   chan time.Time
}

func newFirstOutput() *firstOutput { return &firstOutput{at: make(chan time.Time, 1)} }

func (f *firstOutput) Write(p []byte) (int, error) {
	if len(p) > 0 {
		f.once.Do(func() { f.at <- time.Now() })
	}
	return len(p), nil
}

// sshPrompt logs in with an interactive shell and returns the time to
// its first output (the prompt): from the dial, and from the shell
// request. It then types exit.
func sshPrompt(ctx context.Context, addr string, cfg *ssh.ClientConfig) (login, shell time.Duration, err error) {
	start := time.Now()
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	fo := newFirstOutput()
	s.Stdout, s.Stderr = fo, io.Discard
	in, err := s.StdinPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		return 0, 0, err
	}
	sh := time.Now()
	if err := s.Shell(); err != nil {
		return 0, 0, err
	}
	select {
	case at := <-fo.at:
		login, shell = at.Sub(start), at.Sub(sh)
	case <-time.After(time.Minute):
		return 0, 0, errors.New("no prompt within a minute")
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	_, _ = io.WriteString(in, "exit\n")
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.Close()
		<-done
	}
	return login, shell, nil
}

// rawPrompt is sshPrompt's floor: client-go execs shell -l with a TTY in
// pod and returns the time to its first output; then it types exit.
func rawPrompt(ctx context.Context, rc *rest.Config, client kubernetes.Interface, pod *corev1.Pod, shell string) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fo := newFirstOutput()
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- rawExec(ctx, rc, client, pod, []string{shell, "-l"}, pr, fo, true) }()
	var took time.Duration
	select {
	case at := <-fo.at:
		took = at.Sub(start)
	case err := <-done:
		return 0, fmt.Errorf("the exec ended before a prompt: %v", err)
	case <-time.After(time.Minute):
		cancel()
		<-done
		return 0, errors.New("no prompt within a minute")
	}
	_, _ = io.WriteString(pw, "exit\r")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
	}
	return took, nil
}

// deleteNamespaces deletes the namespaces selector selects and waits
// until they (and so their pods) are gone.
func deleteNamespaces(ctx context.Context, client kubernetes.Interface, selector string) error {
	for {
		list, err := client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		if len(list.Items) == 0 {
			return nil
		}
		for _, ns := range list.Items {
			if ns.DeletionTimestamp == nil {
				if err := client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil {
					return fmt.Errorf("delete namespace %s: %w", ns.Name, err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d namespaces still there: %w", len(list.Items), ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
}

// patchTimes is what bastion_kube_request_duration_seconds says of the
// pod PATCHes bastion sent (its session counts) up to a moment.
type patchTimes struct{ n, sum float64 }

// patchSeconds is what samples say of bastion's pod PATCH times so far.
func patchSeconds(samples []metricSample) patchTimes {
	var p patchTimes
	for _, s := range samples {
		if s.label("method") != "PATCH" || s.label("resource") != "pods" {
			continue
		}
		switch s.name {
		case "bastion_kube_request_duration_seconds_count":
			p.n += s.value
		case "bastion_kube_request_duration_seconds_sum":
			p.sum += s.value
		}
	}
	return p
}

// since says how many PATCHes were sent after earlier, and their mean.
func (p patchTimes) since(earlier patchTimes) string {
	n := p.n - earlier.n
	if n <= 0 {
		return "none"
	}
	return fmt.Sprintf("%.0f, mean %.0f ms", n, (p.sum-earlier.sum)/n*1000)
}

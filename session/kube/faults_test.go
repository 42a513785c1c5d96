package kube

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// capturedBackend is e.backend with its log also kept in the returned
// buffer.
func (e *env) capturedBackend(t *testing.T, heartbeat time.Duration) (*Backend, *sessiontest.SyncBuffer) {
	t.Helper()
	cfg := e.config()
	cfg.Pod.HelperImage = kubetest.ShellImage
	cfg.HeartbeatInterval = heartbeat
	var logs sessiontest.SyncBuffer
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	log := slog.New(slog.NewTextHandler(io.MultiWriter(w, &logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := New(context.WithoutCancel(t.Context()), Config{Kube: cfg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	t.Cleanup(b.Close)
	return b, &logs
}

// A cold login (no namespace, no pod yet) logs no warning: the heartbeat
// runs while the session is still making its pod, which is not found
// until it is created (the chaos runs logged "session heartbeat failed
// ... not found" once per cold login).
func TestColdLoginLogsNoWarning(t *testing.T) {
	e := newEnv(t)
	// A heartbeat far shorter than a cold start, so that several fall
	// while the pod is being made.
	b, logs := e.capturedBackend(t, 100*time.Millisecond)
	u := person("cold", 4701, kubeenv.Home(t, 4701, 4701))
	before := len(logs.String()) // the unpinned test image's warning
	out, errOut, st, err := runCmd(t, b, u, nil, "echo ok", "")
	if err != nil || st.Code != 0 || strings.TrimSpace(out) != "ok" {
		t.Fatalf("cold login: %v %+v %q %q", err, st, out, errOut)
	}
	if !strings.Contains(logs.String(), "created shell pod") {
		t.Fatal("the login made no pod: not a cold login")
	}
	for line := range strings.Lines(logs.String()[before:]) {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("cold login logged: %s", strings.TrimSpace(line))
		}
	}
}

// A session that ends, however it ends, reports its status from the
// helper's trailer at the end of its output: no second exec to ask
// bastion-helper status, which cost every exit the time of an exec (and,
// in a login storm, a node's work per login). The trailer never reaches
// the user.
func TestExitStatusFromTrailer(t *testing.T) {
	e := newEnv(t)
	b, logs := e.capturedBackend(t, time.Minute)
	u := person("trailer", 4703, kubeenv.Home(t, 4703, 4703))
	for _, c := range []struct {
		cmd, out string
		want     session.ExitStatus
	}{
		{"echo ok", "ok\n", session.ExitStatus{}},
		{"printf 'no newline'; exit 3", "no newline", session.ExitStatus{Code: 3}},
		{"echo bye; kill -TERM $$", "bye\n", session.ExitStatus{Signal: "TERM"}},
		{"kill -SEGV $$", "", session.ExitStatus{Signal: "SEGV"}},
		// Output after the exit, from the background: delivered, as
		// under sshd, and the trailer in its middle taken out.
		{"(sleep 1; echo late) & echo now", "now\nlate\n", session.ExitStatus{}},
	} {
		out, errOut, st, err := runCmd(t, b, u, nil, c.cmd, "")
		if err != nil || st != c.want || out != c.out {
			t.Errorf("%s: %v %+v stdout %q stderr %q; want %+v and %q", c.cmd, err, st, out, errOut, c.want, c.out)
		}
	}
	var out sessiontest.SyncBuffer
	st, err := b.Run(t.Context(), session.Request{User: u, Account: u.Account, Stdin: strings.NewReader("echo tty-$((6*7))\nexit 0\n"),
		Stdout: &out, TTY: &session.TTY{Term: "xterm", Size: session.WindowSize{Cols: 80, Rows: 24}}})
	if err != nil || st != (session.ExitStatus{}) || !strings.Contains(out.String(), "tty-42") {
		t.Errorf("tty session: %v %+v %q", err, st, out.String())
	}
	if strings.Contains(out.String(), "bastion-exit") {
		t.Errorf("the trailer reached the user: %q", out.String())
	}
	if strings.Contains(logs.String(), noTrailer) {
		t.Errorf("a session's status was asked of bastion-helper status:\n%s", logs.String())
	}
}

// An exec stream cut before its exit status (what a containerd restart
// does to every exec: the CRI streaming server is in containerd) ends the
// session with the one-line reason and no exit status, never exit 0, and
// leaves no process behind. The API server reports such a cut to a
// WebSocket client as Success, which bastion took for exit 0. The cut is
// made by aborting, with ss -K, containerd's end of the streaming
// connection that the session's exec opened: what containerd going away
// does to it, without restarting containerd under the other tests. It
// cuts every streaming connection opened in the second after the session
// started, which may be another test's (the README's test command runs
// several packages' cluster tests at once), so it runs only with
// -kube.chaos (inside the cluster's flock), like TestAPIServerRestart.
func TestCutExecStream(t *testing.T) {
	if !*chaos {
		t.Skip("cuts the test cluster's streaming connections: run with -args -kube.chaos")
	}
	port := streamingPort(t)
	e := newEnv(t)
	b, _ := e.capturedBackend(t, time.Minute)
	u := person("cut", 4702, kubeenv.Home(t, 4702, 4702))

	// The pod first (and the statuses that are real: exit 0, exit 3,
	// a signal).
	for cmd, want := range map[string]session.ExitStatus{
		"true": {Code: 0}, "exit 3": {Code: 3}, "kill -TERM $$": {Signal: "TERM"},
	} {
		_, errOut, st, err := runCmd(t, b, u, nil, cmd, "")
		if err != nil || st != want {
			t.Fatalf("%s: %v %+v %q, want %+v", cmd, err, st, errOut, want)
		}
	}

	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) {
			marker := fmt.Sprint(100000 + rand.IntN(800000))
			before := streamConns(t, port)
			var out sessiontest.SyncBuffer
			pr, pw := io.Pipe()
			defer pw.Close()
			r := session.Request{User: u, Account: u.Account, Stdin: pr, Stdout: &out, Stderr: &out,
				Command: "echo started; sleep " + marker}
			if tty {
				r.TTY = &session.TTY{Term: "xterm", Size: session.WindowSize{Cols: 80, Rows: 24}}
			}
			type result struct {
				st  session.ExitStatus
				err error
			}
			done := make(chan result, 1)
			go func() { st, err := b.Run(t.Context(), r); done <- result{st, err} }()
			waitFor(t, &out, "started", time.Minute)
			var cut int
			for peer := range streamConns(t, port) {
				if !before[peer] {
					ss := exec.Command("ss", "-K", "-tn", "src", "127.0.0.1:"+port, "dst", peer)
					if o, err := ss.CombinedOutput(); err != nil {
						t.Fatalf("ss -K: %v %s", err, o)
					}
					cut++
				}
			}
			if cut == 0 {
				t.Fatal("the session opened no streaming connection to containerd")
			}
			var res result
			select {
			case res = <-done:
			case <-time.After(time.Minute):
				t.Fatal("the session did not end when its stream was cut")
			}
			if res.err == nil {
				t.Fatalf("a cut stream ended the session with %+v and no error", res.st)
			}
			if msg := userMsg(t, res.err); !strings.Contains(msg, "connection to your shell") || !strings.Contains(msg, "was lost") {
				t.Errorf("the user reads %q", msg)
			}
			if n := countProcs(t, b, u, marker); n != 0 {
				t.Errorf("%d of the session's processes are left after its stream was cut", n)
			}
		})
	}
	out, errOut, st, err := runCmd(t, b, u, nil, "echo ok", "")
	if err != nil || st.Code != 0 || strings.TrimSpace(out) != "ok" {
		t.Fatalf("a login after the cut: %v %+v %q %q", err, st, out, errOut)
	}
}

// streamingPort is the port of containerd's CRI streaming server (on
// loopback, a random port: stream_server_port 0).
func streamingPort(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ss", "-Htlnp").Output()
	if err != nil {
		t.Skipf("ss: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, `"containerd"`) {
			if m := regexp.MustCompile(`127\.0\.0\.1:(\d+)`).FindStringSubmatch(line); m != nil {
				return m[1]
			}
		}
	}
	t.Skipf("no containerd streaming server on loopback in:\n%s", out)
	return ""
}

// streamConns returns the peers of the established connections to
// containerd's streaming server (the kubelet's ends).
func streamConns(t *testing.T, port string) map[string]bool {
	t.Helper()
	out, err := exec.Command("ss", "-Htn", "state", "established", "src", "127.0.0.1:"+port).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	peers := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) >= 4 {
			peers[f[len(f)-1]] = true
		}
	}
	return peers
}

var chaos = flag.Bool("kube.chaos", false, "cut the shared test cluster's streams and restart its API server (TestCutExecStream, TestAPIServerRestart)")

// Logins go on while kube-apiserver restarts (integration/cluster/restart,
// three times): a login refused while it is down reads that the cluster
// is unavailable (or that the connection was lost, for an exec whose
// status could not be confirmed), and none reads "internal error", which a 403 Forbidden
// gave in the first second after each restart, before the new API
// server's RBAC caches had synced. It restarts the shared cluster's API
// server, so it runs only with -kube.chaos (inside the cluster's flock).
func TestAPIServerRestart(t *testing.T) {
	if !*chaos {
		t.Skip("restarts the test cluster's API server: run with -args -kube.chaos")
	}
	restart, err := filepath.Abs("../../integration/cluster/restart")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	b, logs := e.capturedBackend(t, time.Minute)
	u := person("restart", 4703, kubeenv.Home(t, 4703, 4703))
	if _, errOut, st, err := runCmd(t, b, u, nil, "true", ""); err != nil || st.Code != 0 {
		t.Fatalf("first login: %v %+v %s", err, st, errOut)
	}

	var (
		mu                  sync.Mutex
		ok, unavail, others int
		bad                 []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				var out sessiontest.SyncBuffer
				st, err := b.Run(ctx, session.Request{User: u, Account: u.Account, Command: "echo ok",
					Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out})
				cancel()
				msg, _ := session.UserMessage(err)
				mu.Lock()
				switch {
				case err == nil && st.Code == 0 && strings.TrimSpace(out.String()) == "ok":
					ok++
				case err != nil && (strings.Contains(msg, "is unavailable") || strings.Contains(msg, "was lost")):
					// While it is down: exec streams pass through it.
					unavail++
				default:
					others++
					if len(bad) < 10 {
						bad = append(bad, fmt.Sprintf("%+v %v (user reads %q)", st, err, msg))
					}
				}
				mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	for i := range 3 {
		out, err := exec.CommandContext(t.Context(), restart, "kube-apiserver").CombinedOutput()
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("restart %d: %v\n%s", i, err, out)
		}
		time.Sleep(5 * time.Second)
	}
	close(stop)
	wg.Wait()
	t.Logf("logins: %d fine, %d read the cluster is unavailable, %d other", ok, unavail, others)
	for _, s := range bad {
		t.Errorf("login: %s", s)
	}
	if ok == 0 {
		t.Error("no login worked")
	}
	retried := strings.Count(logs.String(), "a retry got through")
	t.Logf("403s retried through: %d", retried)
}

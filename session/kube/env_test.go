package kube

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// env is one test's world on the real cluster: a project of its own
// (namespaces "PROJECT-user-NAME" and "PROJECT-tool-NAME", deleted at the
// end), and the bastion's identity with deploy/rbac's roles.
type env struct {
	admin   *rest.Config
	client  kubernetes.Interface
	project string
	id      *kubeenv.Identity
}

func newEnv(t testing.TB, opts ...kubeenv.Option) *env {
	t.Helper()
	admin, client := kubetest.Client(t)
	sys := kubetest.Namespace(t, client)
	e := &env{admin: admin, client: client, project: "k" + newToken()[:7]}
	e.id = kubeenv.Bastion(t, admin, client, sys, append(opts, kubeenv.WithNamespaces())...)
	kubeenv.Cleanup(t, client, e.project)
	return e
}

// config is the kube section for the test's project: the test shell
// image, hostPath homes at the accounts' home paths.
func (e *env) config() config.Kube {
	yes := true
	cfg := config.Default().Kube
	cfg.Clusters = []config.KubeCluster{{
		Name:       e.project,
		Kubeconfig: e.id.Kubeconfig,
		Namespace: config.KubeNamespace{
			Tool: e.project + "-tool-{account}", User: e.project + "-user-{account}", Create: &yes,
		},
	}}
	cfg.DefaultProject = e.project
	cfg.Pod.Image = kubetest.ShellImage
	cfg.Pod.ImagePullPolicy = "Never"
	cfg.Pod.Home = config.KubeHome{Type: "hostPath", Path: "{home}"}
	cfg.Pod.TerminationGracePeriod = 2 * time.Second
	cfg.Pod.CPULimit = "1"
	cfg.StartTimeout = 30 * time.Second
	return cfg
}

// backend starts a backend for cfg that is closed when the test ends.
func (e *env) backend(t testing.TB, cfg config.Kube) *Backend {
	t.Helper()
	b, err := New(context.WithoutCancel(t.Context()), Config{Kube: cfg, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// namespace makes (as the admin) the namespace the backend would make for
// a person, so that the test can put things in it first.
func (e *env) namespace(t testing.TB, cfg config.Kube, id identity) string {
	t.Helper()
	ns := namespaceFor(cfg.Clusters[0], id)
	_, err := e.client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{pods.LabelProject: e.project, pods.LabelManagedBy: pods.ManagedBy},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	cl := pods.NewCluster(&cfg, cfg.Clusters[0], testLogger(t))
	cl.UseClient(e.client)
	c, err := cl.Current()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitServiceAccount(t.Context(), ns, time.Minute); err != nil {
		t.Fatal(err)
	}
	return ns
}

// echoService runs the image's echo listener behind Service "echo" on
// port 80 in ns (kubetest.EchoService) as a pod of the test's project.
func (e *env) echoService(t testing.TB, ns string) {
	t.Helper()
	kubetest.EchoService(t, e.client, ns, 4000, map[string]string{pods.LabelProject: e.project})
}

// shellPods lists the project's shell pods.
func (e *env) shellPods(t testing.TB) []corev1.Pod {
	t.Helper()
	list, err := e.client.CoreV1().Pods("").List(t.Context(), metav1.ListOptions{LabelSelector: pods.ShellPodsOf(e.project)})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// person is an account that is the user who logged in.
func person(name string, uid int, home string) *auth.User {
	return &auth.User{Account: auth.Account{Name: name, UID: uid, GID: uid, Home: home, Shell: "/bin/bash"}}
}

// runCmd runs command as u's account (or acct, if given) and returns
// stdout, stderr and the status.
func runCmd(t testing.TB, b *Backend, u *auth.User, acct *auth.Account, command, stdin string) (string, string, session.ExitStatus, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	a := u.Account
	if acct != nil {
		a = *acct
	}
	var out, errb sessiontest.SyncBuffer
	st, err := b.Run(ctx, session.Request{User: u, Account: a, Command: command,
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb})
	return out.String(), errb.String(), st, err
}

func waitFor(t testing.TB, out *sessiontest.SyncBuffer, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output %q", want, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testLogger logs to the test's log while it runs (and nowhere after).
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

package kube

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
)

// Time to prompt: from the start of a login (Backend.Run of an
// interactive shell) to the first byte the shell prints (its prompt).
//
//	go test -run XXX -bench Prompt -benchtime 20x ./session/kube/
//
// BenchmarkPromptWarm and BenchmarkPromptKubectlExec compare a warm pod
// with plain `kubectl exec -it POD -- /bin/bash -l` on the same pod;
// BenchmarkPromptCold compares a new pod's time to prompt with the time
// at which a watch of our own sees the pod Ready.

// firstByte signals the first write that is not the start-up progress
// line.
type firstByte struct {
	once sync.Once
	at   chan time.Time
}

func newFirstByte() *firstByte { return &firstByte{at: make(chan time.Time, 1)} }

func (f *firstByte) Write(p []byte) (int, error) {
	if len(p) > 0 && !bytes.HasPrefix(p, []byte("\r\x1b[K")) {
		f.once.Do(func() { f.at <- time.Now() })
	}
	return len(p), nil
}

// prompt starts an interactive login for u and returns the time to its
// first output byte; the session is then cut (not timed).
func prompt(b testing.TB, be *Backend, u *auth.User) time.Duration {
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	fb := newFirstByte()
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := be.Run(ctx, session.Request{User: u, Account: u.Account, Stdin: pr, Stdout: fb, Stderr: fb,
			TTY: &session.TTY{Term: "xterm", Size: session.WindowSize{Cols: 80, Rows: 24}}})
		done <- err
	}()
	var took time.Duration
	select {
	case at := <-fb.at:
		took = at.Sub(start)
	case err := <-done:
		b.Fatalf("the session ended before a prompt: %v", err)
	case <-time.After(2 * time.Minute):
		b.Fatal("no prompt within 2 minutes")
	}
	cancel()
	<-done
	return took
}

func benchUser(b testing.TB, name string, uid int) *auth.User {
	u := person(name, uid, kubeenv.Home(b, uid, uid))
	u.Shell = "/bin/bash"
	return u
}

func BenchmarkPromptWarm(b *testing.B) {
	e := newEnv(b)
	be := e.backend(b, e.config())
	u := benchUser(b, "warm", 6001)
	prompt(b, be, u) // make the pod
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		total += prompt(b, be, u)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "prompt-ms/op")
}

// BenchmarkPromptWarmBecome is BenchmarkPromptWarm for the login sshd
// gives a become socket (an interactive shell of a person's own): the
// backend listens on a unix socket in the pod, whose path goes into the
// shell's environment, then runs the shell. The time runs from the
// Listen to the prompt.
func BenchmarkPromptWarmBecome(b *testing.B) {
	e := newEnv(b)
	cfg := e.config()
	cfg.Pod.HelperImage = kubetest.ShellImage
	be := e.backend(b, cfg)
	u := benchUser(b, "warmbecome", 6005)
	promptBecome(b, be, u) // make the pod
	var total, listen time.Duration
	b.ResetTimer()
	for range b.N {
		p, l := promptBecome(b, be, u)
		total += p
		listen += l
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "prompt-ms/op")
	b.ReportMetric(float64(listen.Microseconds())/1000/float64(b.N), "listen-ms/op")
}

// promptBecome is prompt with a become socket, as sshd's startBecome;
// it returns the time to prompt and the Listen's.
func promptBecome(b testing.TB, be *Backend, u *auth.User) (took, listen time.Duration) {
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	fb := newFirstByte()
	pr, pw := io.Pipe()
	defer pw.Close()
	req := session.Request{User: u, Account: u.Account, Stdin: pr, Stdout: fb, Stderr: fb,
		TTY: &session.TTY{Term: "xterm", Size: session.WindowSize{Cols: 80, Rows: 24}}}
	start := time.Now()
	l, err := be.Listen(ctx, req, "unix", "")
	if err != nil {
		b.Fatalf("listen: %v", err)
	}
	defer l.Close()
	listen = time.Since(start)
	req.Env = map[string]string{"BASTION_BECOME_SOCK": l.Addr().String()}
	done := make(chan error, 1)
	go func() {
		_, err := be.Run(ctx, req)
		done <- err
	}()
	select {
	case at := <-fb.at:
		took = at.Sub(start)
	case err := <-done:
		b.Fatalf("the session ended before a prompt: %v", err)
	case <-time.After(2 * time.Minute):
		b.Fatal("no prompt within 2 minutes")
	}
	cancel()
	<-done
	return took, listen
}

func BenchmarkPromptKubectlExec(b *testing.B) {
	e := newEnv(b)
	be := e.backend(b, e.config())
	u := benchUser(b, "kubectl", 6002)
	prompt(b, be, u)
	pod := e.shellPods(b)[0]
	kubectl := kubectlPath(b)
	kubeconfig := adminKubeconfig(b, e)
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		cmd := exec.Command(kubectl, "--kubeconfig", kubeconfig, "exec", "-it", "-n", pod.Namespace, pod.Name, "--", "/bin/bash", "-l")
		start := time.Now()
		f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 1)
		if _, err := f.Read(buf); err != nil {
			b.Fatalf("kubectl exec: %v", err)
		}
		total += time.Since(start)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		f.Close()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "prompt-ms/op")
}

func BenchmarkPromptCold(b *testing.B) {
	e := newEnv(b)
	cfg := e.config()
	be := e.backend(b, cfg)
	u := benchUser(b, "cold", 6003)
	prompt(b, be, u) // the namespace exists from here on
	var total, ready time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		pod := e.shellPods(b)[0]
		zero := int64(0)
		if err := e.client.CoreV1().Pods(pod.Namespace).Delete(b.Context(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
		if err := kubeenv.WaitNoPods(ctx, e.client, pods.ShellPodsOf(e.project)); err != nil {
			b.Fatal(err)
		}
		// Our own watch, to see when the new pod turns Ready.
		w, err := e.client.CoreV1().Pods(pod.Namespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + pod.Name})
		if err != nil {
			b.Fatal(err)
		}
		readyAt := make(chan time.Time, 1)
		go func() {
			for ev := range w.ResultChan() {
				if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && pods.Ready(p) {
					readyAt <- time.Now()
					return
				}
			}
		}()
		b.StartTimer()
		start := time.Now()
		took := prompt(b, be, u)
		b.StopTimer()
		select {
		case at := <-readyAt:
			ready += at.Sub(start)
		case <-ctx.Done():
			b.Fatal("our watch never saw the pod Ready")
		}
		w.Stop()
		cancel()
		total += took
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(total.Microseconds())/1000/n, "prompt-ms/op")
	b.ReportMetric(float64(ready.Microseconds())/1000/n, "ready-ms/op")
	b.ReportMetric(float64((total-ready).Microseconds())/1000/n, "over-ready-ms/op")
}

func kubectlPath(b testing.TB) string {
	dir, _ := os.Getwd()
	for {
		p := filepath.Join(dir, ".cache", "kube", "v1.37.2", "bin", "kubectl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		b.Skip("no kubectl")
	}
	return p
}

// adminKubeconfig writes the admin config as a kubeconfig file for kubectl.
func adminKubeconfig(b testing.TB, e *env) string {
	c := e.admin
	ca, cert, key := c.CAData, c.CertData, c.KeyData
	var err error
	read := func(data []byte, file string) []byte {
		if len(data) > 0 || file == "" || err != nil {
			return data
		}
		var d []byte
		d, err = os.ReadFile(file)
		return d
	}
	ca, cert, key = read(ca, c.CAFile), read(cert, c.CertFile), read(key, c.KeyFile)
	if err != nil {
		b.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: ca}
	cfg.AuthInfos["a"] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key, Token: c.BearerToken}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "a"}
	cfg.CurrentContext = "c"
	path := filepath.Join(b.TempDir(), "admin.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkPromptRawExec is the floor under BenchmarkPromptWarm: the same
// exec of /bin/bash -l with client-go in this process, without the
// session annotation, the wrapper or the pod watch.
func BenchmarkPromptRawExec(b *testing.B) {
	e := newEnv(b)
	be := e.backend(b, e.config())
	u := benchUser(b, "raw", 6004)
	prompt(b, be, u)
	pod := e.shellPods(b)[0]
	c, err := be.order[0].Client()
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		ctx, cancel := context.WithCancel(b.Context())
		fb := newFirstByte()
		pr, pw := io.Pipe()
		done := make(chan struct{})
		go func() {
			_ = c.Exec(ctx, &pod, []string{"/bin/bash", "-l"}, remotecommand.StreamOptions{Stdin: pr, Stdout: fb, Tty: true})
			close(done)
		}()
		total += (<-fb.at).Sub(start)
		io.WriteString(pw, "exit\r")
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		cancel()
		<-done
		pw.Close()
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "prompt-ms/op")
}

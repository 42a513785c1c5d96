package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/integration/slapd"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
)

// kubeWorld is slapd with the Toolforge-like tree (homes under a
// temporary directory, owned by their accounts) and `bastion serve` with
// the kube backend on the real test cluster, as its own ServiceAccount
// with deploy/rbac's roles. Homes are hostPath volumes at the accounts'
// home paths (the node is this machine), so the test reads what the pods
// wrote.
type kubeWorld struct {
	t       *testing.T
	slapd   *slapd.Server
	client  kubernetes.Interface
	id      *kubeenv.Identity
	project string
	homes   string
	keys    string
	dir     string
	bast    *server
}

// kubeOptions are what a test changes in the world's config.
type kubeOptions struct {
	image       string
	idleTimeout string
	proxy       bool
	// podKeys are more keys of kube.pod (YAML lines indented by four
	// spaces); {pod_api_server} in them is the API server's URL as pods
	// reach it (kubeenv.PodAPIServer).
	podKeys string
	// detachedMaxAge is kube.detached_max_age ("": the default).
	detachedMaxAge string
	// ops turns the ops listener (metrics) on.
	ops bool
}

func startKubeWorld(t *testing.T, o kubeOptions) *kubeWorld {
	t.Helper()
	needTools(t, "ssh", "scp", "ssh-keygen")
	if os.Geteuid() != 0 {
		t.Skip("the kube end-to-end tests need root (hostPath homes owned by the accounts)")
	}
	slapd.Require(t)
	admin, client := kubetest.Client(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	w := &kubeWorld{t: t, client: client, project: "e2e" + hex.EncodeToString(b[:]), homes: t.TempDir(), keys: t.TempDir(), dir: t.TempDir()}
	sys := kubetest.Namespace(t, client)
	opts := []kubeenv.Option{kubeenv.WithNamespaces()}
	if o.proxy {
		opts = append(opts, kubeenv.WithProxy())
	}
	w.id = kubeenv.Bastion(t, admin, client, sys, opts...)
	kubeenv.Cleanup(t, client, w.project)

	for _, d := range []string{w.homes, filepath.Join(w.homes, "project")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, id := range ldapAccounts {
		home := filepath.Join(w.homes, name)
		if err := os.Mkdir(home, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(home, id, id); err != nil {
			t.Fatal(err)
		}
	}
	seed := slapd.DefaultSeed(t)
	seed = strings.ReplaceAll(seed, "homeDirectory: /home/", "homeDirectory: "+w.homes+"/")
	seed = strings.ReplaceAll(seed, "homeDirectory: /data/project/", "homeDirectory: "+w.homes+"/project/")
	seed = strings.ReplaceAll(seed, "loginShell: /bin/zsh", "loginShell: /bin/sh")
	ca := slapd.NewCA(t, "kube e2e CA")
	w.slapd = slapd.Start(t, slapd.Options{LDIF: seed, TLS: ca})
	ca.WriteCert(t, filepath.Join(w.dir, "ldap-ca.pem"))
	if o.image == "" {
		o.image = kubetest.ShellImage
	}
	if o.idleTimeout == "" {
		o.idleTimeout = "30m"
	}
	if strings.Contains(o.podKeys, "{pod_api_server}") {
		o.podKeys = strings.ReplaceAll(o.podKeys, "{pod_api_server}", kubeenv.PodAPIServer(t, admin))
	}
	if o.detachedMaxAge == "" {
		o.detachedMaxAge = "168h"
	}
	opsListen := ""
	if o.ops {
		opsListen = "127.0.0.1:0"
	}
	hostKey := userKey(t, w.dir, "ssh_host_ed25519_key")
	cfg := fmt.Sprintf(`ssh:
  listen: 127.0.0.1:0
  host_keys: [%s]
directory:
  type: ldap
ldap:
  urls: [%q]
  ca_file: ldap-ca.pem
  bind_dn: cn=bastion,ou=apps,{base}
  bind_password_file: %s
  base_dn: %s
  kill_switch_file: ""
backend:
  type: kube
forwarding:
  # In-cluster names (NAME.NAMESPACE.svc) are checked by the kube backend:
  # only the account's own and its tools' namespaces.
  allow: ["*.svc:*"]
kube:
  project_group_pattern: "project-{project}"
  default_project: %[5]s
  idle_timeout: %[6]s
  detached_max_age: %[10]s
  sweep_interval: 500ms
  heartbeat_interval: 1s
  start_timeout: 30s
  pod:
    image: %[7]s
    image_pull_policy: Never
    cpu_limit: "1"
    termination_grace_period: 2s
%[9]s    home:
      type: hostPath
      path: "{home}"
  clusters:
    - name: %[5]s
      kubeconfig: %[8]s
      namespace:
        tool: "{project}-tool-{account}"
        user: "{project}-user-{account}"
        create: true
ops:
  listen: %[11]q
log:
  format: text
  level: debug
`, hostKey, w.slapd.URL, w.slapd.PasswordFile, slapd.Base, w.project, o.idleTimeout, o.image, w.id.Kubeconfig, o.podKeys, o.detachedMaxAge, opsListen)
	cfgPath := filepath.Join(w.dir, "bastion.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	w.bast = w.serve(t)
	return w
}

// serve starts one more `bastion serve` with the world's config.
func (w *kubeWorld) serve(t *testing.T) *server {
	t.Helper()
	s := startServe(t, w.dir, filepath.Join(w.dir, "bastion.yaml"), "/etc/passwd", "/etc/group")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bastion log (port %s):\n%s", s.port, s.logs())
		}
	})
	return s
}

func (w *kubeWorld) key(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(w.keys, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return slapd.WritePrivateKey(t, w.keys, name)
}

// ns is the namespace of a person ("user") or a tool ("tool").
func (w *kubeWorld) ns(kind, name string) string { return w.project + "-" + kind + "-" + name }

func (w *kubeWorld) pods(t *testing.T) []corev1.Pod {
	t.Helper()
	list, err := w.client.CoreV1().Pods("").List(t.Context(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/component=shell,bastion.io/project=" + w.project,
	})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// ssh runs ssh through bastion s as login with key and returns stdout,
// stderr and the exit code.
func (w *kubeWorld) ssh(t *testing.T, s *server, login, key, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return s.runAs(t, w.key(t, key), login, stdin, args...)
}

func owner(t *testing.T, path string) int {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Sys().(*syscall.Stat_t).Uid)
}

func TestKubeSessions(t *testing.T) {
	w := startKubeWorld(t, kubeOptions{})
	s := w.bast

	t.Run("exec with exit codes and both streams", func(t *testing.T) {
		out, errOut, code := w.ssh(t, s, "alice", "alice-1", "", "--", `echo "$USER $HOME $(id -u)"; echo oops >&2; exit 7`)
		if code != 7 || out != fmt.Sprintf("alice %s/alice 5001\n", w.homes) || !strings.Contains(errOut, "oops") {
			t.Errorf("exit %d stdout %q stderr %q", code, out, errOut)
		}
		if _, _, code := w.ssh(t, s, "alice", "alice-1", "", "--", "false"); code != 1 {
			t.Errorf("false: exit %d", code)
		}
		out, _, code = w.ssh(t, s, "alice", "alice-1", "line1\nline2\n", "--", "cat; echo EOF-seen")
		if code != 0 || out != "line1\nline2\nEOF-seen\n" {
			t.Errorf("stdin EOF: exit %d stdout %q", code, out)
		}
	})

	t.Run("become and user+tool run in the tool's pod as the tool", func(t *testing.T) {
		for _, c := range []struct{ login, cmd string }{{"alice", "become mytool id -u"}, {"alice+mytool", "id -u"}, {"bob+mytool", "id -u"}} {
			out, errOut, code := w.ssh(t, s, c.login, map[string]string{"alice": "alice-1", "alice+mytool": "alice-1", "bob+mytool": "bob-1"}[c.login], "", "--", c.cmd)
			if code != 0 || out != "52001\n" {
				t.Errorf("%s %q: exit %d stdout %q stderr %q", c.login, c.cmd, code, out, errOut)
			}
		}
		var tool, alice int
		for _, p := range w.pods(t) {
			switch p.Annotations["bastion.io/account"] {
			case "tools.mytool":
				tool++
				if p.Namespace != w.ns("tool", "mytool") {
					t.Errorf("the tool's pod is in %s", p.Namespace)
				}
			case "alice":
				alice++
			}
		}
		if tool != 1 || alice != 1 {
			t.Errorf("pods: %d for mytool, %d for alice; want one each", tool, alice)
		}
	})

	t.Run("login shell with a pty and a resize", func(t *testing.T) {
		testKubePTY(t, w, s)
	})

	t.Run("file transfer into the home and the tool's home", func(t *testing.T) {
		needTools(t, "sftp", "rsync")
		src := filepath.Join(t.TempDir(), "payload.txt")
		payload := strings.Repeat("kube transfer\n", 1000)
		if err := os.WriteFile(src, []byte(payload), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, dest := range []struct {
			login, key, home string
			uid              int
		}{
			{"alice", "alice-1", filepath.Join(w.homes, "alice"), 5001},
			{"alice+mytool", "alice-1", filepath.Join(w.homes, "project", "mytool"), 52001},
		} {
			base := append(s.sshOptsKey(w.key(t, dest.key)), "-P", s.port)
			target := dest.login + "@127.0.0.1:"
			for _, c := range []struct {
				name string
				cmd  []string
				file string
			}{
				{"scp (sftp protocol)", append(append([]string{"scp"}, base...), src, target+"scp.txt"), "scp.txt"},
				{"scp -O (legacy protocol)", append(append([]string{"scp", "-O"}, base...), src, target+"scp-legacy.txt"), "scp-legacy.txt"},
				{"rsync", []string{"rsync", "-e", "ssh " + strings.Join(append(s.sshOptsKey(w.key(t, dest.key)), "-p", s.port), " "), src, target + "rsync.txt"}, "rsync.txt"},
			} {
				t.Run(dest.login+" "+c.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
					defer cancel()
					if out, err := exec.CommandContext(ctx, c.cmd[0], c.cmd[1:]...).CombinedOutput(); err != nil {
						t.Fatalf("%v: %s", err, out)
					}
					path := filepath.Join(dest.home, c.file)
					if data, err := os.ReadFile(path); err != nil || string(data) != payload {
						t.Fatalf("%s: %d bytes, %v", path, len(data), err)
					}
					if uid := owner(t, path); uid != dest.uid {
						t.Errorf("%s belongs to uid %d, want %d", path, uid, dest.uid)
					}
				})
			}
			t.Run(dest.login+" sftp", func(t *testing.T) {
				args := append(s.sshOptsKey(w.key(t, dest.key)), "-P", s.port, "-b", "-", dest.login+"@127.0.0.1")
				cmd := exec.Command("sftp", args...)
				cmd.Stdin = strings.NewReader("put " + src + " sftp.txt\npwd\nget sftp.txt " + filepath.Join(t.TempDir(), "back.txt") + "\n")
				out, err := cmd.CombinedOutput()
				if err != nil || !strings.Contains(string(out), dest.home) {
					t.Fatalf("sftp: %v\n%s", err, out)
				}
				if uid := owner(t, filepath.Join(dest.home, "sftp.txt")); uid != dest.uid {
					t.Errorf("sftp.txt belongs to uid %d, want %d", uid, dest.uid)
				}
			})
		}
	})

	t.Run("pod reuse across concurrent sessions and two bastions", func(t *testing.T) {
		s2 := w.serve(t)
		marker := fmt.Sprintf("reuse-%d", time.Now().UnixNano())
		var wg sync.WaitGroup
		outs := make([]string, 4)
		for i := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				srv := s
				if i%2 == 1 {
					srv = s2
				}
				out, errOut, code := w.ssh(t, srv, "bob", "bob-1", "", "--", "touch /tmp/"+marker+"; sleep 1; ls /tmp | grep -c "+marker+"; uname -n")
				if code != 0 {
					t.Errorf("session %d: exit %d %q", i, code, errOut)
				}
				outs[i] = out
			}()
		}
		wg.Wait()
		for _, o := range outs {
			if o != outs[0] || !strings.HasPrefix(o, "1\nshell-bob-") {
				t.Fatalf("four sessions on two bastions saw %q; want one pod (/tmp shared)", outs)
			}
		}
		n := 0
		for _, p := range w.pods(t) {
			if p.Annotations["bastion.io/account"] == "bob" {
				n++
				sessions := 0
				for k := range p.Annotations {
					if strings.HasPrefix(k, "sessions.bastion.io/") {
						sessions++
					}
				}
				if sessions != 2 {
					t.Errorf("bob's pod has session annotations from %d replicas, want 2", sessions)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d pods for bob", n)
		}
	})

	t.Run("ssh -L to a Service in the tool's namespace, and denied forwards", func(t *testing.T) {
		ns := w.ns("tool", "mytool")
		// mytool's first login makes its namespace.
		if _, errOut, code := w.ssh(t, s, "alice+mytool", "alice-1", "", "--", "true"); code != 0 {
			t.Fatalf("mytool: exit %d %q", code, errOut)
		}
		kubetest.EchoService(t, w.client, ns, 52001, map[string]string{"bastion.io/project": w.project})
		port := freePort(t)
		fwd := startForward(t, s, w.key(t, "alice-1"), "alice", port+":echo."+ns+".svc:80")
		ok, err := dialEcho("127.0.0.1:" + port)
		if !ok {
			t.Fatalf("echo through ssh -L: %v\nbastion log:\n%s", err, s.logs())
		}
		fwd.stop()
		// A tool login forwards as the tool: a bare name is looked up in
		// the tool's namespace, not the person's (issue 11).
		port = freePort(t)
		fwd = startForward(t, s, w.key(t, "alice-1"), "alice+mytool", port+":echo:80")
		if ok, err := dialEcho("127.0.0.1:" + port); !ok {
			t.Errorf("echo through ssh -L as alice+mytool: %v\nbastion log:\n%s", err, s.logs())
		}
		fwd.stop()

		// othertool is not alice's: refused by the backend. An address
		// outside forwarding.allow: refused by sshd.
		for _, dest := range []string{"echo." + w.ns("tool", "othertool") + ".svc:80", "10.1.2.3:80"} {
			port := freePort(t)
			fwd := startForward(t, s, w.key(t, "alice-1"), "alice", port+":"+dest)
			if ok, _ := dialEcho("127.0.0.1:" + port); ok {
				t.Errorf("forward to %s worked", dest)
			}
			fwd.stop()
		}
		waitFor(t, "the denied forwards in the log", 10*time.Second, func() bool {
			l := s.logs()
			return strings.Contains(l, "forwarding into namespace "+w.ns("tool", "othertool")+" is not allowed") &&
				strings.Contains(l, "forward denied") && strings.Contains(l, "10.1.2.3:80")
		})
	})

	t.Run("the pod deleted mid-session", func(t *testing.T) {
		type result struct {
			errOut string
			code   int
		}
		done := make(chan result, 1)
		go func() {
			_, errOut, code := w.ssh(t, s, "carol", "carol-1", "", "--", "echo started >&2; sleep 600")
			done <- result{errOut, code}
		}()
		var pod corev1.Pod
		waitFor(t, "carol's pod", time.Minute, func() bool {
			for _, p := range w.pods(t) {
				if p.Annotations["bastion.io/account"] == "carol" && p.Status.Phase == corev1.PodRunning {
					pod = p
					return strings.Contains(s.logs(), "account=carol")
				}
			}
			return false
		})
		time.Sleep(time.Second) // the command is running
		if err := w.client.CoreV1().Pods(pod.Namespace).Delete(t.Context(), pod.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			if r.code == 0 || !strings.Contains(r.errOut, "was deleted; log in again to get a new one") {
				t.Errorf("exit %d, stderr %q", r.code, r.errOut)
			}
		case <-time.After(45 * time.Second):
			t.Fatal("the session did not end when its pod was deleted")
		}
		if out, errOut, code := w.ssh(t, s, "carol", "carol-1", "", "--", "echo new pod"); code != 0 || out != "new pod\n" {
			t.Errorf("next login: exit %d %q %q", code, out, errOut)
		}
	})
}

// testKubePTY drives an interactive login through a real terminal: the
// shell's prompt comes, stty sees the size, a resize reaches the pod.
func testKubePTY(t *testing.T, w *kubeWorld, s *server) {
	args := append(s.sshOptsKey(w.key(t, "alice-1")), "-tt", "-p", s.port, "alice@127.0.0.1")
	cmd := exec.Command("ssh", args...)
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mu sync.Mutex
	var buf bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		r := bufio.NewReader(f)
		chunk := make([]byte, 4096)
		for {
			n, err := r.Read(chunk)
			mu.Lock()
			buf.Write(chunk[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	output := func() string { mu.Lock(); defer mu.Unlock(); return buf.String() }
	expect := func(want string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%q on the terminal (have %q)", want, output()), 60*time.Second, func() bool { return strings.Contains(output(), want) })
	}
	io.WriteString(f, "echo TTY=$(tty | cut -c1-8) SIZE=$(stty size)\n")
	expect("TTY=/dev/pts SIZE=24 80")
	if err := pty.Setsize(f, &pty.Winsize{Rows: 40, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // ssh forwards SIGWINCH as window-change
	io.WriteString(f, "echo NEW=$(stty size)\n")
	expect("NEW=40 132")
	io.WriteString(f, "exit 3\n")
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
			t.Errorf("ssh ended with %v, want exit 3", err)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("ssh did not end after exit")
	}
	f.Close()
	<-readDone
}

// forwarder is a running `ssh -N -L`.
type forwarder struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startForward(t *testing.T, s *server, key, login, spec string) *forwarder {
	t.Helper()
	args := append(s.sshOptsKey(key), "-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:"+spec, "-p", s.port, login+"@127.0.0.1")
	f := &forwarder{cmd: exec.Command("ssh", args...), done: make(chan struct{})}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = f.cmd.Wait(); close(f.done) }()
	t.Cleanup(f.stop)
	local := strings.Split(spec, ":")[0]
	waitFor(t, "the local end of ssh -L", 20*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+local)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return f
}

func (f *forwarder) stop() {
	select {
	case <-f.done:
		return
	default:
	}
	_ = f.cmd.Process.Signal(syscall.SIGTERM)
	<-f.done
}

// A short idle timeout: the pod goes soon after the last session.
func TestKubeIdleReaping(t *testing.T) {
	w := startKubeWorld(t, kubeOptions{idleTimeout: "3s"})
	if out, _, code := w.ssh(t, w.bast, "alice", "alice-1", "", "--", "sleep 5; echo kept"); code != 0 || out != "kept\n" {
		t.Fatalf("a session longer than the idle timeout: exit %d %q", code, out)
	}
	if len(w.pods(t)) != 1 {
		t.Fatal("the pod went while in use")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kubeenv.WaitNoPods(ctx, w.client, "app.kubernetes.io/component=shell,bastion.io/project="+w.project); err != nil {
		t.Fatalf("idle pod not reaped: %v", err)
	}
	t.Logf("reaped %v after the last session", time.Since(start).Round(100*time.Millisecond))
	waitFor(t, "the reaping in the log", 10*time.Second, func() bool { return strings.Contains(w.bast.logs(), "reason=\"idle for") })
}

// The shell image is missing: the user reads it within 10 seconds, and
// the pod is deleted.
func TestKubeMissingImage(t *testing.T) {
	w := startKubeWorld(t, kubeOptions{image: "bastion.test/missing:test"})
	start := time.Now()
	_, errOut, code := w.ssh(t, w.bast, "alice", "alice-1", "", "-o", "LogLevel=INFO", "--", "true")
	took := time.Since(start)
	if code == 0 || !strings.Contains(errOut, "the shell image bastion.test/missing:test is not available in "+w.project+"; administrators have been alerted") {
		t.Errorf("exit %d stderr %q", code, errOut)
	}
	if took > 10*time.Second {
		t.Errorf("the message took %v", took)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kubeenv.WaitNoPods(ctx, w.client, "app.kubernetes.io/component=shell,bastion.io/project="+w.project); err != nil {
		t.Errorf("the pod was left behind: %v", err)
	}
	if !strings.Contains(w.bast.logs(), "reason=ErrImageNeverPull") {
		t.Error("the bastion log does not give the reason")
	}
}

// The API server stops (here: its address stops answering) and comes
// back: logins meanwhile read that the cluster is unavailable, and work
// again afterwards without a restart.
func TestKubeAPIServerDown(t *testing.T) {
	w := startKubeWorld(t, kubeOptions{proxy: true})
	if out, _, code := w.ssh(t, w.bast, "alice", "alice-1", "", "--", "echo up"); code != 0 || out != "up\n" {
		t.Fatalf("before: exit %d %q", code, out)
	}
	w.id.Proxy.Down()
	for _, who := range [][2]string{{"alice", "alice-1"}, {"bob", "bob-1"}} {
		_, errOut, code := w.ssh(t, w.bast, who[0], who[1], "", "-o", "LogLevel=INFO", "--", "echo up")
		if code == 0 || !strings.Contains(errOut, "the cluster for project "+w.project+" is unavailable") {
			t.Errorf("%s with the API server down: exit %d stderr %q", who[0], code, errOut)
		}
	}
	w.id.Proxy.Up(t)
	for _, who := range [][2]string{{"alice", "alice-1"}, {"bob", "bob-1"}} {
		if out, errOut, code := w.ssh(t, w.bast, who[0], who[1], "", "--", "echo back"); code != 0 || out != "back\n" {
			t.Errorf("%s after the API server came back: exit %d %q %q", who[0], code, out, errOut)
		}
	}
	if n := len(w.pods(t)); n != 2 {
		t.Errorf("%d pods, want 2 (nothing leaked)", n)
	}
}

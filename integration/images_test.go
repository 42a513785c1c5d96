package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
)

// Shell images that cannot vanish under users: fallback, pre-flight and
// the inventory, on the real test cluster. Images are removed from and
// put back into the node's containerd with ctr (the node is this
// machine). The tests only ever remove tags of their own, made from
// kubetest.ShellImage; kubetest.ShellImage itself is re-imported from its
// tarball at the end if it went missing anyway, because other tests share
// the cluster.

// clusterDir is integration/cluster's work directory.
func clusterDir() string {
	if d := os.Getenv("BASTION_CLUSTER_DIR"); d != "" {
		return d
	}
	return "/var/lib/bastion-test-cluster"
}

// node is the test node's containerd, in the namespace the kubelet uses.
type node struct{ sock string }

func testNode(t *testing.T) *node {
	t.Helper()
	if _, err := exec.LookPath("ctr"); err != nil {
		t.Skip("needs ctr (containerd) to add and remove images on the test node")
	}
	n := &node{sock: filepath.Join(clusterDir(), "containerd", "containerd.sock")}
	if _, err := os.Stat(n.sock); err != nil {
		t.Skipf("needs the test node's containerd on this machine (%v): the cluster of %s is not the local one", err, kubetest.KubeconfigEnv)
	}
	// Registered first, so it runs last: whatever happened, the shared
	// shell image is there for the next test.
	t.Cleanup(func() { n.restoreShellImage(t) })
	return n
}

func (n *node) ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (n *node) has(ref string) bool {
	out, err := n.ctr("images", "ls", "-q", "name=="+ref)
	return err == nil && strings.TrimSpace(out) == ref
}

// manifestDigest is the digest containerd has for kubetest.ShellImage.
func (n *node) manifestDigest(t *testing.T) string {
	t.Helper()
	out, err := n.ctr("images", "ls", "name=="+kubetest.ShellImage)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[0] == kubetest.ShellImage && strings.HasPrefix(f[2], "sha256:") {
			return f[2]
		}
	}
	t.Fatalf("no digest for %s in:\n%s", kubetest.ShellImage, out)
	return ""
}

// imageID is the ID (config digest) of kubetest.ShellImage that
// integration/cluster/up recorded.
func imageID(t *testing.T) string {
	data, err := os.ReadFile(filepath.Join(clusterDir(), "images.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == kubetest.ShellImage {
			return f[1]
		}
	}
	t.Fatalf("images.txt does not list %s", kubetest.ShellImage)
	return ""
}

// tag makes ref another name of kubetest.ShellImage (the same content:
// the equivalent of importing it again under that name), removed when the
// test ends.
func (n *node) tag(t *testing.T, ref string) {
	t.Helper()
	if _, err := n.ctr("images", "tag", "--force", kubetest.ShellImage, ref); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n.has(ref) {
			if _, err := n.ctr("images", "rm", ref); err != nil {
				t.Errorf("clean-up: %v", err)
			}
		}
	})
}

// remove removes ref from the node, as a registry's expiry policy would.
func (n *node) remove(t *testing.T, ref string) {
	t.Helper()
	if ref == kubetest.ShellImage {
		t.Fatal("never remove the shared shell image")
	}
	if _, err := n.ctr("images", "rm", ref); err != nil {
		t.Fatal(err)
	}
	if n.has(ref) {
		t.Fatalf("%s is still on the node", ref)
	}
}

func (n *node) restoreShellImage(t *testing.T) {
	if n.has(kubetest.ShellImage) {
		return
	}
	t.Logf("%s went missing from the node: importing it again", kubetest.ShellImage)
	if _, err := n.ctr("images", "import", filepath.Join(clusterDir(), "images", "shell.tar")); err != nil {
		t.Errorf("restore %s: %v", kubetest.ShellImage, err)
	}
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// imageOptions change the kube world's config for these tests.
type imageOptions struct {
	primary     string
	fallbacks   []string
	idleTimeout string
	preflight   string // YAML under kube.preflight (indented 4)
	extraKube   string // YAML appended to kube.clusters (indented 4)
	podExtra    string // YAML under kube.pod (indented 4)
}

// startImagesWorld is startKubeWorld with fallback images, pre-flight
// settings and the ops listener: its first bastion is replaced by one
// with the full config. It returns the config file.
func startImagesWorld(t *testing.T, o imageOptions) (*kubeWorld, string) {
	t.Helper()
	w := startKubeWorld(t, kubeOptions{image: o.primary, idleTimeout: o.idleTimeout})
	w.bast.stop()
	path := filepath.Join(w.dir, "bastion.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(data)
	replace := func(old, new string) {
		t.Helper()
		if strings.Count(cfg, old) != 1 {
			t.Fatalf("the kube world's config has changed: %q is not in it once", old)
		}
		cfg = strings.Replace(cfg, old, new, 1)
	}
	pod := "    image_pull_policy: Never\n"
	if len(o.fallbacks) > 0 {
		q, _ := json.Marshal(o.fallbacks)
		pod += "    fallback_images: " + string(q) + "\n"
	}
	replace("    image_pull_policy: Never\n", pod+o.podExtra)
	if o.preflight == "" {
		o.preflight = "    timeout: 20s\n    retry_interval: 0s\n"
	}
	replace("kube:\n", "kube:\n  preflight:\n"+o.preflight)
	replace("        create: true\n", "        create: true\n"+o.extraKube)
	replace("ops:\n  listen: \"\"\n", "ops:\n  listen: 127.0.0.1:0\n")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	w.bast = w.serve(t)
	return w, path
}

// logLines are the lines of s's log with message msg that contain every
// one of attrs.
func logLines(s *server, msg string, attrs ...string) []string {
	var out []string
	for _, line := range strings.Split(s.logs(), "\n") {
		if !strings.Contains(line, "msg=\""+msg+"\"") && !strings.Contains(line, "msg="+msg+" ") {
			continue
		}
		ok := true
		for _, a := range attrs {
			if !strings.Contains(line, a) {
				ok = false
			}
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// metricLine is the sample of name with exactly these labels (in the
// exposition's order), or "" if there is none.
func metricSample(t *testing.T, base, name, labels string) (float64, bool) {
	t.Helper()
	_, body := httpGet(t, base+"/metrics")
	prefix := name + "{" + labels + "} "
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, prefix), &v)
			return v, true
		}
	}
	return 0, false
}

func waitMetric(t *testing.T, base, name, labels string, want float64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s{%s} = %v", name, labels, want), 60*time.Second, func() bool {
		v, ok := metricSample(t, base, name, labels)
		return ok && v == want
	})
}

// podsOf are the world's shell pods of account.
func (w *kubeWorld) podsOf(t *testing.T, account string) []corev1.Pod {
	var out []corev1.Pod
	for _, p := range w.pods(t) {
		if p.Annotations["bastion.io/account"] == account {
			out = append(out, p)
		}
	}
	return out
}

func (w *kubeWorld) onePod(t *testing.T, account string) corev1.Pod {
	t.Helper()
	pods := w.podsOf(t, account)
	if len(pods) != 1 {
		var names []string
		for _, p := range pods {
			names = append(names, p.Name+" "+p.Spec.Containers[0].Image)
		}
		t.Fatalf("%d shell pods for %s, want 1: %q", len(pods), account, names)
	}
	return pods[0]
}

func notices(s string) int {
	return strings.Count(s, " is unavailable; your shell runs on the previous image ")
}

// The primary image vanishes from the node while the cluster runs: a new
// login falls back to the previous image within seconds and says so in
// one line, on stderr and on a terminal; a pod running on the primary is
// untouched; pre-flight marks the primary failing while /readyz stays
// ready. The image comes back, a reload runs pre-flight, which finds it
// working, and new pods use it again while the fallback pods are left
// alone.
func TestKubeImageFallback(t *testing.T) {
	n := testNode(t)
	r := randomSuffix()
	primary := "bastion.test/shell:primary-" + r
	fallback := "bastion.test/fallback-" + r + "@" + n.manifestDigest(t)
	n.tag(t, primary)
	n.tag(t, fallback)
	w, _ := startImagesWorld(t, imageOptions{primary: primary, fallbacks: []string{fallback}})
	s := w.bast
	base := s.opsURL(t)
	waitFor(t, "pre-flight ok for both images", time.Minute, func() bool {
		return len(logLines(s, "pre-flight ok", "image="+primary, "role=primary")) == 1 &&
			len(logLines(s, "pre-flight ok", "image="+fallback, "role=fallback")) == 1
	})
	waitMetric(t, base, "bastion_preflight_ok", fmt.Sprintf(`cluster=%q,image=%q`, w.project, primary), 1)
	waitMetric(t, base, "bastion_preflight_ok", fmt.Sprintf(`cluster=%q,image=%q`, w.project, fallback), 1)

	// bob has a pod on the primary, and a session running in it.
	if out, errOut, code := w.ssh(t, s, "bob", "bob-1", "", "--", "echo first"); code != 0 || out != "first\n" || notices(errOut) != 0 {
		t.Fatalf("bob: exit %d %q %q", code, out, errOut)
	}
	bobPod := w.onePod(t, "bob")
	if img := bobPod.Spec.Containers[0].Image; img != primary {
		t.Fatalf("bob's pod runs %s, want the primary %s", img, primary)
	}
	type result struct {
		out, errOut string
		code        int
	}
	bobDone := make(chan result, 1)
	go func() {
		out, errOut, code := w.ssh(t, s, "bob", "bob-1", "", "--", "echo started; sleep 15; echo still-here")
		bobDone <- result{out, errOut, code}
	}()
	time.Sleep(2 * time.Second) // bob's command is running

	n.remove(t, primary)
	start := time.Now()
	out, errOut, code := w.ssh(t, s, "alice", "alice-1", "", "--", "echo alice-ok")
	took := time.Since(start)
	wantLine := fmt.Sprintf("bastion: image %s is unavailable; your shell runs on the previous image %s\n", primary, fallback)
	if code != 0 || out != "alice-ok\n" || !strings.Contains(errOut, wantLine) || notices(errOut) != 1 {
		t.Fatalf("alice after the primary vanished: exit %d stdout %q stderr %q", code, out, errOut)
	}
	t.Logf("alice fell back in %v; she read: %q", took.Round(100*time.Millisecond), strings.TrimSpace(wantLine))
	if took > 15*time.Second {
		t.Errorf("the fallback took %v", took)
	}
	alicePod := w.onePod(t, "alice")
	if img := alicePod.Spec.Containers[0].Image; img != fallback {
		t.Errorf("alice's pod runs %s, want the fallback", img)
	}
	if l := logLines(s, "shell image unavailable; starting the pod from the next image", "image="+primary, "reason=ErrImageNeverPull", "next="+fallback); len(l) != 1 {
		t.Errorf("fallback log lines: %q", l)
	}
	waitMetric(t, base, "bastion_shell_image_fallbacks_total", fmt.Sprintf(`cluster=%q,image=%q`, w.project, primary), 1)
	if v, _ := metricSample(t, base, "bastion_pod_start_failures_total", fmt.Sprintf(`cluster=%q,reason="ErrImageNeverPull"`, w.project)); v != 1 {
		t.Errorf("pod start failures (ErrImageNeverPull) = %v, want 1", v)
	}

	// An interactive login: the line is on the terminal. The primary is
	// known to be unavailable now: no failed pod first.
	start = time.Now()
	term := interactiveLogin(t, w, s, "carol", "carol-1")
	term.expect(strings.TrimSuffix(wantLine, "\n") + "\r\n")
	took = time.Since(start)
	term.send("echo TTY-$((6*7))\n")
	term.expect("TTY-42")
	if code := term.exit(); code != 0 || notices(term.output()) != 1 {
		t.Errorf("carol on a terminal: exit %d, terminal %q", code, term.output())
	}
	if img := w.onePod(t, "carol").Spec.Containers[0].Image; img != fallback {
		t.Errorf("carol's pod runs %s, want the fallback", img)
	}
	t.Logf("carol's terminal showed the line after %v", took.Round(100*time.Millisecond))
	if v, _ := metricSample(t, base, "bastion_pod_start_failures_total", fmt.Sprintf(`cluster=%q,reason="ErrImageNeverPull"`, w.project)); v != 1 {
		t.Errorf("pod start failures (ErrImageNeverPull) = %v, want still 1: carol's login tried the known-missing primary", v)
	}

	// bob's session and pod were not disturbed.
	select {
	case res := <-bobDone:
		if res.code != 0 || res.out != "started\nstill-here\n" || notices(res.errOut) != 0 {
			t.Errorf("bob's running session: exit %d %q %q", res.code, res.out, res.errOut)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("bob's session did not end")
	}
	if p := w.onePod(t, "bob"); p.UID != bobPod.UID || p.Spec.Containers[0].Image != primary || p.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("bob's pod changed: uid %s→%s image %s", bobPod.UID, p.UID, p.Spec.Containers[0].Image)
	}
	if out, errOut, code := w.ssh(t, s, "bob", "bob-1", "", "--", "echo again"); code != 0 || out != "again\n" || notices(errOut) != 0 {
		t.Errorf("bob's next session on his primary pod: exit %d %q %q", code, out, errOut)
	}

	// The session's failure started a pre-flight: the primary is failing,
	// the fallback works, so the replica stays ready.
	waitFor(t, "pre-flight failed for the primary", time.Minute, func() bool {
		return len(logLines(s, "pre-flight failed", "image="+primary, "reason=ErrImageNeverPull", "new_pods_use="+fallback)) > 0
	})
	waitMetric(t, base, "bastion_preflight_ok", fmt.Sprintf(`cluster=%q,image=%q`, w.project, primary), 0)
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz with a working fallback: %d %s", code, body)
	}

	// The image comes back; a reload runs pre-flight; new pods use it.
	n.tag(t, primary)
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pre-flight finding the primary working again", time.Minute, func() bool {
		return len(logLines(s, "shell image works again; new pods use it", "image="+primary, "primary=true")) == 1
	})
	waitMetric(t, base, "bastion_preflight_ok", fmt.Sprintf(`cluster=%q,image=%q`, w.project, primary), 1)
	out, errOut, code = w.ssh(t, s, "alice+mytool", "alice-1", "", "--", "echo tool-ok")
	if code != 0 || out != "tool-ok\n" || notices(errOut) != 0 {
		t.Errorf("a new pod after the primary came back: exit %d %q %q", code, out, errOut)
	}
	if img := w.onePod(t, "tools.mytool").Spec.Containers[0].Image; img != primary {
		t.Errorf("the new pod runs %s, want the primary again", img)
	}
	if out, errOut, code := w.ssh(t, s, "alice", "alice-1", "", "--", "echo still"); code != 0 || out != "still\n" || notices(errOut) != 0 {
		t.Errorf("alice again: exit %d %q %q", code, out, errOut)
	}
	if p := w.onePod(t, "alice"); p.UID != alicePod.UID || p.Spec.Containers[0].Image != fallback {
		t.Errorf("alice's healthy pod on the previous image was replaced: %s %s", p.UID, p.Spec.Containers[0].Image)
	}

	// The gauge: two pods on each image, at the one digest they share.
	digest := n.manifestDigest(t)
	waitMetric(t, base, "bastion_shell_image_pods", fmt.Sprintf(`cluster=%q,digest=%q,image=%q`, w.project, digest, primary), 2)
	waitMetric(t, base, "bastion_shell_image_pods", fmt.Sprintf(`cluster=%q,digest=%q,image=%q`, w.project, digest, fallback), 2)
}

// Every image is missing: pre-flight says so (log, metric, /readyz), a
// login is refused with a clear line after trying each image, and no pod
// is left behind.
func TestKubeImagesAllMissing(t *testing.T) {
	n := testNode(t)
	r := randomSuffix()
	primary := "bastion.test/shell:gone-" + r
	fallback := "bastion.test/gone-" + r + "@" + n.manifestDigest(t)
	w, _ := startImagesWorld(t, imageOptions{primary: primary, fallbacks: []string{fallback}})
	s := w.bast
	base := s.opsURL(t)
	for _, img := range []string{primary, fallback} {
		waitFor(t, "pre-flight failed for "+img, time.Minute, func() bool {
			return len(logLines(s, "pre-flight failed", "image="+img, "reason=ErrImageNeverPull", "new_pods_use=\"none: no image of this cluster starts\"")) > 0
		})
		waitMetric(t, base, "bastion_preflight_ok", fmt.Sprintf(`cluster=%q,image=%q`, w.project, img), 0)
	}

	start := time.Now()
	out, errOut, code := w.ssh(t, s, "alice", "alice-1", "", "-o", "LogLevel=INFO", "--", "echo never")
	took := time.Since(start)
	want := fmt.Sprintf("no shell image is available in %s (tried %s, %s); administrators have been alerted", w.project, primary, fallback)
	if code == 0 || out != "" || !strings.Contains(errOut, want) || notices(errOut) != 0 {
		t.Fatalf("all images missing: exit %d stdout %q stderr %q", code, out, errOut)
	}
	t.Logf("refused after %v: %q", took.Round(100*time.Millisecond), want)
	if took > 20*time.Second {
		t.Errorf("the refusal took %v", took)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kubeenv.WaitNoPods(ctx, w.client, "bastion.io/project="+w.project); err != nil {
		t.Errorf("pods left behind (shell or probe): %v", err)
	}
	if l := logLines(s, "no shell image can be pulled; refusing the session", "tried=\""+primary+" "+fallback+"\""); len(l) != 1 {
		t.Errorf("refusal log lines %q", l)
	}
	if l := logLines(s, "shell pod cannot start; deleting it", "reason=ErrImageNeverPull"); len(l) != 2 {
		t.Errorf("want one start failure logged per image, got %q", l)
	}
	waitMetric(t, base, "bastion_pod_start_failures_total", fmt.Sprintf(`cluster=%q,reason="ErrImageNeverPull"`, w.project), 2)
	waitMetric(t, base, "bastion_shell_image_fallbacks_total", fmt.Sprintf(`cluster=%q,image=%q`, w.project, primary), 1)
	// No image works anywhere: not ready (after the readiness probe's
	// 30 s grace for a check that answered before).
	waitFor(t, "/readyz not ready", 60*time.Second, func() bool {
		code, body := httpGet(t, base+"/readyz")
		return code == 503 && strings.Contains(body, "no shell image starts in any cluster: "+w.project)
	})
}

// bastion images lists exactly the images configured and those live pods
// run, with digests and pod counts, as a table and as a protect list; a
// pod reaped leaves the list.
func TestKubeImagesInventory(t *testing.T) {
	n := testNode(t)
	r := randomSuffix()
	current := "bastion.test/shell:inv-" + r
	digest := n.manifestDigest(t)
	fbRepo := "bastion.test/inv-fallback-" + r
	fallback := fbRepo + "@" + digest
	n.tag(t, current)
	n.tag(t, fallback)
	w, cfgPath := startImagesWorld(t, imageOptions{primary: current, fallbacks: []string{fallback}, idleTimeout: "3s"})
	s := w.bast
	base := s.opsURL(t)
	// The next config: a new primary (a tag nothing runs yet), the same
	// fallback.
	next := "bastion.test/shell:next-" + r
	data, _ := os.ReadFile(cfgPath)
	nextPath := filepath.Join(w.dir, "next.yaml")
	if err := os.WriteFile(nextPath, []byte(strings.Replace(string(data), "image: "+current+"\n", "image: "+next+"\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}

	images := func(path string, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bastionBinary(t), append([]string{"images", "--config", path}, args...)...)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errOut.String(), code
	}
	table := func(out string) []string {
		var rows []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			rows = append(rows, strings.Join(strings.Fields(line), " "))
		}
		return rows
	}
	header := "CLUSTER IMAGE DIGEST PODS CONFIG"

	// alice's pod, held by a session.
	held := make(chan int, 1)
	go func() {
		_, _, code := w.ssh(t, s, "alice", "alice-1", "", "--", "sleep 6")
		held <- code
	}()
	var pod corev1.Pod
	waitFor(t, "alice's running pod", time.Minute, func() bool {
		for _, p := range w.podsOf(t, "alice") {
			if p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].ImageID != "" {
				pod = p
				return true
			}
		}
		return false
	})
	// What the pod runs, as its status says: the digest of a repository
	// reference (containerd reports one when the image has any), or the
	// image ID.
	podDigest := pod.Status.ContainerStatuses[0].ImageID
	podDigest = podDigest[strings.LastIndex(podDigest, "@")+1:]
	if podDigest != digest && podDigest != imageID(t) {
		t.Fatalf("alice's pod's imageID %q names neither the image's digest %s nor its ID", pod.Status.ContainerStatuses[0].ImageID, digest)
	}

	out, errOut, code := images(cfgPath)
	t.Logf("bastion images (current config):\n%s", out)
	want := []string{header,
		fmt.Sprintf("%s %s %s 1 primary", w.project, current, podDigest),
		fmt.Sprintf("%s %s %s 0 fallback", w.project, fallback, digest),
	}
	if code != 0 || !slices.Equal(table(out), want) {
		t.Errorf("bastion images: exit %d\n%s\nstderr: %s\nwant:\n%s", code, out, errOut, strings.Join(want, "\n"))
	}

	out, errOut, code = images(nextPath)
	t.Logf("bastion images (next config):\n%s", out)
	want = []string{header,
		fmt.Sprintf("%s %s - 0 primary", w.project, next),
		fmt.Sprintf("%s %s %s 0 fallback", w.project, fallback, digest),
		fmt.Sprintf("%s %s %s 1 -", w.project, current, podDigest),
	}
	if code != 0 || !slices.Equal(table(out), want) || !strings.Contains(errOut, next+" has no known digest (no pod runs it): pin it by digest") {
		t.Errorf("bastion images: exit %d\n%s\nstderr: %s\nwant:\n%s", code, out, errOut, strings.Join(want, "\n"))
	}

	out, _, code = images(nextPath, "--output", "json")
	t.Logf("bastion images --output json (next config):\n%s", out)
	var doc struct {
		Clusters []struct {
			Cluster string `json:"cluster"`
			Images  []struct {
				Image, Digest, Config string
				Pods                  int
			} `json:"images"`
			Error string `json:"error"`
		} `json:"clusters"`
		Protect    []string `json:"protect"`
		Unresolved []string `json:"unresolved"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	wantProtect := []string{fbRepo + "@" + digest, "bastion.test/shell@" + podDigest}
	slices.Sort(wantProtect)
	if code != 0 || len(doc.Clusters) != 1 || doc.Clusters[0].Cluster != w.project || len(doc.Clusters[0].Images) != 3 ||
		doc.Clusters[0].Images[2].Image != current || doc.Clusters[0].Images[2].Pods != 1 ||
		!slices.Equal(doc.Protect, wantProtect) || !slices.Equal(doc.Unresolved, []string{next}) {
		t.Errorf("json: exit %d %+v\nwant protect %q unresolved [%s]", code, doc, wantProtect, next)
	}
	waitMetric(t, base, "bastion_shell_image_pods", fmt.Sprintf(`cluster=%q,digest=%q,image=%q`, w.project, podDigest, current), 1)

	// The session ends; the idle pod is reaped; the list follows.
	if c := <-held; c != 0 {
		t.Fatalf("alice's session: exit %d", c)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kubeenv.WaitNoPods(ctx, w.client, "app.kubernetes.io/component=shell,bastion.io/project="+w.project); err != nil {
		t.Fatalf("alice's idle pod was not reaped: %v", err)
	}
	waitFor(t, "the reaping in the log", 10*time.Second, func() bool { return strings.Contains(s.logs(), "reason=\"idle for") })

	out, errOut, code = images(nextPath)
	t.Logf("bastion images (next config, after the reaping):\n%s", out)
	want = []string{header,
		fmt.Sprintf("%s %s - 0 primary", w.project, next),
		fmt.Sprintf("%s %s %s 0 fallback", w.project, fallback, digest),
	}
	if code != 0 || !slices.Equal(table(out), want) {
		t.Errorf("after the reaping: exit %d\n%s\nstderr: %s\nwant:\n%s", code, out, errOut, strings.Join(want, "\n"))
	}
	out, _, code = images(cfgPath)
	t.Logf("bastion images (current config, after the reaping):\n%s", out)
	want = []string{header,
		fmt.Sprintf("%s %s - 0 primary", w.project, current),
		fmt.Sprintf("%s %s %s 0 fallback", w.project, fallback, digest),
	}
	if code != 0 || !slices.Equal(table(out), want) {
		t.Errorf("after the reaping: exit %d\n%s\nwant:\n%s", code, out, strings.Join(want, "\n"))
	}
	// The gauge: no pod on any image; the pod's series is gone or 0.
	waitFor(t, "bastion_shell_image_pods at 0 after the reaping", 30*time.Second, func() bool {
		_, body := httpGet(t, base+"/metrics")
		re := regexp.MustCompile(`(?m)^bastion_shell_image_pods\{cluster="` + w.project + `",[^}]*\} ([0-9.e+]+)$`)
		ms := re.FindAllStringSubmatch(body, -1)
		for _, m := range ms {
			if m[1] != "0" {
				return false
			}
		}
		return len(ms) == 2 // the two configured images
	})
}

// terminal is an interactive ssh login on a real terminal.
type terminal struct {
	t    *testing.T
	cmd  *exec.Cmd
	f    *os.File
	mu   sync.Mutex
	buf  strings.Builder
	done chan struct{}
}

func interactiveLogin(t *testing.T, w *kubeWorld, s *server, login, key string) *terminal {
	t.Helper()
	args := append(s.sshOptsKey(w.key(t, key)), "-tt", "-p", s.port, login+"@127.0.0.1")
	term := &terminal{t: t, cmd: exec.Command("ssh", args...), done: make(chan struct{})}
	f, err := pty.StartWithSize(term.cmd, &pty.Winsize{Rows: 24, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	term.f = f
	go func() {
		defer close(term.done)
		b := make([]byte, 4096)
		for {
			n, err := f.Read(b)
			term.mu.Lock()
			term.buf.Write(b[:n])
			term.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = term.cmd.Process.Kill()
		f.Close()
		<-term.done
	})
	return term
}

func (term *terminal) output() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.buf.String()
}

func (term *terminal) send(s string) { _, _ = term.f.WriteString(s) }

func (term *terminal) expect(want string) {
	term.t.Helper()
	waitFor(term.t, fmt.Sprintf("%q on the terminal (have %q)", want, term.output()), 60*time.Second, func() bool {
		return strings.Contains(term.output(), want)
	})
}

// exit ends the login shell and returns ssh's exit code.
func (term *terminal) exit() int {
	term.t.Helper()
	term.send("exit\n")
	errc := make(chan error, 1)
	go func() { errc <- term.cmd.Wait() }()
	select {
	case err := <-errc:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			term.t.Fatal(err)
		}
		return 0
	case <-time.After(30 * time.Second):
		term.t.Fatal("ssh did not end after exit")
		return -1
	}
}

// hangingAPI accepts connections and never answers: an API server that
// hangs. It returns a kubeconfig for it, made from kubeconfig.
func hangingAPI(t *testing.T, kubeconfig string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + ln.Addr().String()
	}
	path := filepath.Join(t.TempDir(), "hanging.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// check-config --preflight: a missing primary, a probe pod that never
// schedules and a cluster whose API server hangs are each reported, with
// a non-zero exit, within bounded time; a good config passes. bastion
// serve with the hanging cluster starts at once and serves the other
// cluster; a fallback given by tag draws a warning at load.
func TestKubePreflightCheckConfig(t *testing.T) {
	n := testNode(t)
	r := randomSuffix()
	missing := "bastion.test/shell:missing-" + r
	good := "bastion.test/shell:good-" + r
	n.tag(t, good)
	w, cfgPath := startImagesWorld(t, imageOptions{primary: good, preflight: "    timeout: 6s\n"})
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	variant := func(name string, edit func(string) string) string {
		p := filepath.Join(w.dir, name+".yaml")
		if err := os.WriteFile(p, []byte(edit(string(data))), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	checkConfig := func(path string) (string, int, time.Duration) {
		t.Helper()
		start := time.Now()
		out, err := exec.Command(bastionBinary(t), "check-config", "--config", path, "--preflight").CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		t.Logf("check-config --preflight %s: exit %d after %v\n%s", filepath.Base(path), code, time.Since(start).Round(100*time.Millisecond), out)
		return string(out), code, time.Since(start)
	}

	out, code, _ := checkConfig(cfgPath)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("pre-flight %s %s: ok in ", w.project, good)) || !strings.Contains(out, "pre-flight ok: 1 images") {
		t.Errorf("a good config: exit %d\n%s", code, out)
	}

	// The primary is missing; its fallback (by tag) works.
	missingCfg := variant("missing", func(c string) string {
		return strings.Replace(c, "    image: "+good+"\n", "    image: "+missing+"\n    fallback_images: ["+good+"]\n", 1)
	})
	out, code, _ = checkConfig(missingCfg)
	for _, want := range []string{
		fmt.Sprintf(`warning: kube.pod.fallback_images[0]: %q is a tag, not a digest; pin it (repo@sha256:...)`, good),
		fmt.Sprintf(`pre-flight %s %s: FAILED: ErrImageNeverPull: Container image %q is not present with pull policy of Never`, w.project, missing, missing),
		fmt.Sprintf("pre-flight %s %s: ok in ", w.project, good),
		"pre-flight failed for 1 of 2 images",
	} {
		if code == 0 || !strings.Contains(out, want) {
			t.Errorf("a missing primary: exit %d, want %q in:\n%s", code, want, out)
		}
	}

	// A probe pod that never schedules: a bounded wait and the reason.
	unschedulable := variant("unschedulable", func(c string) string {
		return strings.Replace(c, "    image_pull_policy: Never\n", "    image_pull_policy: Never\n    node_selector: {bastion.test/no-such-node: \"x\"}\n", 1)
	})
	out, code, took := checkConfig(unschedulable)
	if code == 0 || !regexp.MustCompile(`pre-flight \S+ \S+: FAILED: Unschedulable: the probe pod was not scheduled within 6s: 0/1 nodes are available: 1 node\(s\) didn't match Pod's node affinity/selector`).MatchString(out) {
		t.Errorf("never scheduled: exit %d\n%s", code, out)
	}
	if took > 20*time.Second {
		t.Errorf("never scheduled: check-config took %v", took)
	}

	// A second cluster whose API server hangs.
	down := "down" + r
	hanging := hangingAPI(t, w.id.Kubeconfig)
	downCfg := variant("down", func(c string) string {
		c = strings.Replace(c, "kube:\n", "kube:\n  api_timeout: 3s\n", 1)
		return strings.Replace(c, "        create: true\n", "        create: true\n    - name: "+down+"\n      kubeconfig: "+hanging+"\n", 1)
	})
	out, code, took = checkConfig(downCfg)
	if code == 0 || !strings.Contains(out, fmt.Sprintf("pre-flight %s %s: FAILED: ClusterUnavailable: the cluster's API server is unavailable", down, good)) ||
		!strings.Contains(out, fmt.Sprintf("pre-flight %s %s: ok in", w.project, good)) {
		t.Errorf("a hanging cluster: exit %d\n%s", code, out)
	}
	if took > 20*time.Second {
		t.Errorf("a hanging cluster: check-config took %v", took)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := kubeenv.WaitNoPods(ctx, w.client, "app.kubernetes.io/component=preflight,bastion.io/project="+w.project); err != nil {
		t.Errorf("probe pods left behind: %v", err)
	}

	// bastion serve with the hanging cluster and a fallback by tag: it
	// listens at once, says what is wrong, and the other cluster serves.
	w.bast.stop()
	both := variant("serve-down", func(c string) string {
		c = strings.Replace(c, "    image_pull_policy: Never\n", "    image_pull_policy: Never\n    fallback_images: [\""+kubetest.ShellImage+"\"]\n", 1)
		return strings.Replace(c, "        create: true\n", "        create: true\n    - name: "+down+"\n      kubeconfig: "+hanging+"\n", 1)
	})
	if err := os.Rename(both, cfgPath); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s := w.serve(t)
	t.Logf("bastion serve listening %v after start with a hanging cluster", time.Since(start).Round(10*time.Millisecond))
	if time.Since(start) > 5*time.Second {
		t.Errorf("start-up took %v with a hanging cluster", time.Since(start))
	}
	if l := logLines(s, "fallback shell image is not pinned by digest", "kube.pod.fallback_images[0]"); len(l) != 1 {
		t.Errorf("warning at load: %q\nlog:\n%s", l, s.logs())
	}
	if out, errOut, code := w.ssh(t, s, "alice", "alice-1", "", "--", "echo served"); code != 0 || out != "served\n" {
		t.Errorf("the good cluster while the other hangs: exit %d %q %q", code, out, errOut)
	}
	waitFor(t, "pre-flight reporting the hanging cluster", time.Minute, func() bool {
		return len(logLines(s, "pre-flight failed", "project="+down, "reason="+"ClusterUnavailable")) == 2 &&
			len(logLines(s, "pre-flight ok", "project="+w.project)) == 2
	})
	base := s.opsURL(t)
	waitMetric(t, base, "bastion_preflight_ok", fmt.Sprintf(`cluster=%q,image=%q`, down, good), 0)
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz with one cluster hanging: %d %s", code, body)
	}
}

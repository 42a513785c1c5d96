package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	watchtools "k8s.io/client-go/tools/watch"
)

// What integration/cluster/up imports into the cluster. Keep in step with
// integration/cluster/lib.sh and deploy/shell-image/Dockerfile.
const (
	// ShellImage is the test shell image: bash and sh, coreutils-level tools,
	// sftp-server (at SFTPServer), scp, rsync, kubectl and the echo listener.
	ShellImage = "bastion.test/shell:test"
	// PauseImage is the sandbox image the cluster's containerd uses.
	PauseImage = "bastion.test/pause:test"
	// EchoCommand listens on TCP (flag -addr, default ":8080") and echoes.
	EchoCommand = "/usr/local/bin/bastion-echo"
	// SFTPServer is where OpenSSH's sftp-server is in ShellImage.
	SFTPServer = "/usr/lib/openssh/sftp-server"
	// HelperCommand is bastion-helper in ShellImage, where bastion's own
	// image has it: the tests use ShellImage as kube.pod.helper_image.
	HelperCommand = "/usr/local/bin/bastion-helper"

	// ManagedByLabel marks every object this package's users create.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedBy is ManagedByLabel's value.
	ManagedBy = "bastion-kubetest"

	// KubeconfigEnv names a kubeconfig of a running cluster to use instead of
	// starting one with integration/cluster/up.
	KubeconfigEnv = "BASTION_TEST_KUBECONFIG"
	// SkipEnv set to 1 skips every test that needs the cluster.
	SkipEnv = "BASTION_SKIP_KUBE"

	// upTimeout bounds integration/cluster/up: a cold run builds Kubernetes.
	upTimeout = 30 * time.Minute
)

var (
	upOnce       sync.Once
	upKubeconfig string
	upErr        error
)

// Config returns a client-go config for the test cluster's admin, starting
// the cluster with integration/cluster/up if it is not up. Under -short it
// skips the test. Each call returns a new copy that the caller may change.
func Config(t testing.TB) *rest.Config {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the real Kubernetes cluster that integration/cluster/up starts; skipped under -short")
	}
	if os.Getenv(SkipEnv) == "1" {
		t.Skip("needs the real Kubernetes cluster; skipped because " + SkipEnv + "=1")
	}
	upOnce.Do(func() {
		if path := os.Getenv(KubeconfigEnv); path != "" {
			upKubeconfig = path
			return
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), upTimeout)
		defer cancel()
		upKubeconfig, upErr = clusterUp(ctx)
	})
	if upErr != nil {
		t.Fatalf("test cluster: %v", upErr)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", upKubeconfig)
	if err != nil {
		t.Fatalf("test cluster: load kubeconfig %s: %v", upKubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "bastion-kubetest"
	return cfg
}

// Client returns Config(t) and a clientset for it.
func Client(t testing.TB) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	cfg := Config(t)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("test cluster: clientset: %v", err)
	}
	return cfg, client
}

// clusterUp runs integration/cluster/up (a no-op when the cluster is up) and
// returns the kubeconfig path it prints last. Its progress goes to stderr.
func clusterUp(ctx context.Context) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	script := filepath.Join(root, "integration", "cluster", "up")
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, script)
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(os.Stderr, &stderr)
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", script, err, lastLines(stderr.String(), 30))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	path := strings.TrimSpace(lines[len(lines)-1])
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%s printed %q, which is not a kubeconfig: %w", script, path, err)
	}
	return path, nil
}

// repoRoot walks up from the working directory (the package's directory
// under go test) to the directory that holds integration/cluster/up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "integration", "cluster", "up")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find the repository root: no integration/cluster/up above the working directory")
		}
		dir = parent
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Namespace creates a namespace for the test, waits until its default
// ServiceAccount exists (pods cannot be created before), and deletes it when
// the test ends, waiting until it is gone.
func Namespace(t testing.TB, client kubernetes.Interface) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "bastion-test-",
			Labels:       map[string]string{ManagedByLabel: ManagedBy},
			Annotations:  map[string]string{"bastion.test/test": t.Name()},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	name := ns.Name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 2*time.Minute)
		defer cancel()
		err := client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
			return
		}
		if err := waitDeleted(ctx, client.CoreV1().RESTClient(), "namespaces", "", name, &corev1.Namespace{}); err != nil {
			t.Errorf("namespace %s: %v", name, err)
		}
	})

	lw := listWatch(client.CoreV1().RESTClient(), "serviceaccounts", name, "default")
	_, err = watchtools.UntilWithSync(ctx, lw, &corev1.ServiceAccount{}, func(store cache.Store) (bool, error) {
		_, exists, err := store.GetByKey(name + "/default")
		return exists, err
	}, func(ev watch.Event) (bool, error) {
		return ev.Type == watch.Added || ev.Type == watch.Modified, nil
	})
	if err != nil {
		t.Fatalf("namespace %s: wait for the default ServiceAccount: %v", name, err)
	}
	return name
}

// WaitForPod watches the pod until done returns true or an error, and returns
// the pod as done saw it. It fails if the pod is deleted first.
func WaitForPod(ctx context.Context, client kubernetes.Interface, namespace, name string, done func(*corev1.Pod) (bool, error)) (*corev1.Pod, error) {
	lw := listWatch(client.CoreV1().RESTClient(), "pods", namespace, name)
	var last *corev1.Pod
	check := func(obj any) (bool, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return false, fmt.Errorf("watch pods: got %T", obj)
		}
		last = pod
		return done(pod)
	}
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, func(store cache.Store) (bool, error) {
		obj, exists, err := store.GetByKey(namespace + "/" + name)
		if err != nil || !exists {
			return false, err
		}
		return check(obj)
	}, func(ev watch.Event) (bool, error) {
		switch ev.Type {
		case watch.Deleted:
			return false, fmt.Errorf("pod %s/%s was deleted", namespace, name)
		case watch.Added, watch.Modified:
			return check(ev.Object)
		}
		return false, nil
	})
	if err != nil {
		if last != nil {
			return last, fmt.Errorf("wait for pod %s/%s (phase %s, %s): %w", namespace, name, last.Status.Phase, describeContainers(last), err)
		}
		return nil, fmt.Errorf("wait for pod %s/%s: %w", namespace, name, err)
	}
	return last, nil
}

// PodReady reports whether the pod's Ready condition is True. A pod that has
// finished can never become Ready, which is an error.
func PodReady(pod *corev1.Pod) (bool, error) {
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return false, fmt.Errorf("pod %s/%s ended (%s): %s", pod.Namespace, pod.Name, pod.Status.Phase, describeContainers(pod))
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue, nil
		}
	}
	return false, nil
}

// DeletePod deletes the pod and watches until it is gone.
func DeletePod(ctx context.Context, client kubernetes.Interface, namespace, name string) error {
	err := client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete pod %s/%s: %w", namespace, name, err)
	}
	return waitDeleted(ctx, client.CoreV1().RESTClient(), "pods", namespace, name, &corev1.Pod{})
}

func waitDeleted(ctx context.Context, c cache.Getter, resource, namespace, name string, obj runtime.Object) error {
	key := name
	if namespace != "" {
		key = namespace + "/" + name
	}
	_, err := watchtools.UntilWithSync(ctx, listWatch(c, resource, namespace, name), obj, func(store cache.Store) (bool, error) {
		_, exists, err := store.GetByKey(key)
		return !exists, err
	}, func(ev watch.Event) (bool, error) {
		return ev.Type == watch.Deleted, nil
	})
	if err != nil {
		return fmt.Errorf("wait until %s %s is deleted: %w", resource, key, err)
	}
	return nil
}

func listWatch(c cache.Getter, resource, namespace, name string) *cache.ListWatch {
	return cache.NewListWatchFromClient(c, resource, namespace, fields.OneTermEqualSelector("metadata.name", name))
}

func describeContainers(pod *corev1.Pod) string {
	var parts []string
	for _, cs := range pod.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			parts = append(parts, fmt.Sprintf("%s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message))
		case cs.State.Terminated != nil:
			parts = append(parts, fmt.Sprintf("%s terminated: %s exit %d %s", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode, cs.State.Terminated.Message))
		case cs.State.Running != nil:
			parts = append(parts, cs.Name+" running")
		}
	}
	if len(parts) == 0 {
		return "no container status"
	}
	return strings.Join(parts, "; ")
}

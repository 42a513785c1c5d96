package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
)

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

// The login storm (issue 15): N accounts log in at the same instant on
// a cold cluster (no pod, no namespace), each running echo in its pod,
// against the floor: the same N namespaces and pods made by raw client-go
// (kube.qps and burst as bastion's, 50 and 100) until every pod is Ready.
//
//	go test -run TestLoginStormKube -timeout 30m ./bench -args -kube.storm 200
func TestLoginStormKube(t *testing.T) {
	if testing.Short() || *kubeStorm == 0 {
		t.Skip("the login storm runs with -args -kube.storm N (N accounts at once on the test cluster)")
	}
	n := *kubeStorm
	k := startKubeSoak(t, n, "-sessions", "1", "-duration", "5s", "-login-rate", "0")
	client := k.client

	// The floor: namespace, its default ServiceAccount, pod, Ready.
	floorSel := "bastion.io/project=" + k.project + ",bastion.io/floor=true"
	req, tooMany, err := apiserverRequests(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var mu sync.Mutex
	var floor []time.Duration
	var errs []error
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := floorPod(t.Context(), client, k.project, i)
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
	req2, tooMany2, err := apiserverRequests(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 {
		t.Fatalf("raw client-go: %d of %d pods failed, first: %v", len(errs), n, errs[0])
	}
	t.Logf("floor (raw client-go): %d namespaces and pods Ready in %s (%s); API server: %.0f requests (%.0f/s), %.0f answered 429",
		n, floorWall.Round(10*time.Millisecond), stormTimes(floor), req2-req, (req2-req)/floorWall.Seconds(), tooMany2-tooMany)
	// Cold again: the floor's namespaces and pods go.
	nss, err := client.CoreV1().Namespaces().List(t.Context(), metav1.ListOptions{LabelSelector: floorSel})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss.Items {
		_ = client.CoreV1().Namespaces().Delete(t.Context(), ns.Name, metav1.DeleteOptions{})
	}
	wctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if err := kubeenv.WaitNoPods(wctx, client, floorSel); err != nil {
		t.Fatalf("the floor's pods did not go: %v", err)
	}

	// bastion: every account logs in at once and runs echo in its pod.
	w, err := startSoakWorld(t.Context(), k.opt, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close(k.opt.keep)
	req, tooMany, err = apiserverRequests(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := w.metrics(t.Context())
	gate := make(chan struct{})
	var logins []time.Duration
	errs = nil
	for i := range n {
		wg.Go(func() {
			<-gate
			s := time.Now()
			c, err := ssh.Dial("tcp", w.srv.addr(), w.clientConfig(k.opt.accounts[i]))
			if err == nil {
				err = runLoginCommand(c, "echo ok")
				c.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", k.opt.accounts[i], err))
				return
			}
			logins = append(logins, time.Since(s))
		})
	}
	start = time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)
	req2, tooMany2, err = apiserverRequests(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := w.metrics(t.Context())
	starts := after["bastion_pod_start_duration_seconds_count"] - before["bastion_pod_start_duration_seconds_count"]
	startSum := after["bastion_pod_start_duration_seconds_sum"] - before["bastion_pod_start_duration_seconds_sum"]
	if starts > 0 {
		t.Logf("bastion's pods: creation to Ready %.1f s on average (bastion_pod_start_duration_seconds)", startSum/starts)
	}
	t.Logf("bastion: %d of %d logins printed ok in %s (%s); %.0f pods created, %.0f API errors; API server: %.0f requests (%.0f/s, kube.qps 50, burst 100, as bastion's own client limit), %.0f answered 429; bastion/floor: %.2f",
		len(logins), n, wall.Round(10*time.Millisecond), stormTimes(logins),
		after["bastion_pods_created_total"]-before["bastion_pods_created_total"],
		after["bastion_kube_api_errors_total"]-before["bastion_kube_api_errors_total"],
		req2-req, (req2-req)/wall.Seconds(), tooMany2-tooMany, wall.Seconds()/floorWall.Seconds())
	if len(errs) > 0 {
		t.Errorf("%d of %d logins failed, first: %v", len(errs), n, errs[0])
	}
}

// floorPod makes namespace <project>-floor-<i>, waits for its default
// ServiceAccount, makes a pod like a shell pod and waits until it is Ready.
func floorPod(ctx context.Context, client kubernetes.Interface, project string, i int) error {
	name := fmt.Sprintf("%s-floor-%03d", project, i)
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   name,
		Labels: map[string]string{"bastion.io/project": project, "bastion.io/floor": "true", kubetest.ManagedByLabel: kubetest.ManagedBy},
	}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	for {
		if _, err := client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	uid := int64(61000 + i)
	no, yes := false, true
	_, err = client.CoreV1().Pods(name).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "shell", Labels: map[string]string{"bastion.io/project": project, "bastion.io/floor": "true"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: new(int64(2)),
			SecurityContext:               &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid, RunAsNonRoot: &yes},
			Containers: []corev1.Container{{
				Name: "shell", Image: kubetest.ShellImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sleep", "infinity"},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("256Mi")},
				},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	_, err = kubetest.WaitForPod(wctx, client, name, "shell", kubetest.PodReady)
	return err
}

package kube

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"

	"github.com/bastion-ssh/bastion/config"
)

// reloadCheck is how often, at most, a cluster's kubeconfig is looked at
// for changes (on use; there is no goroutine for it).
const reloadCheck = time.Second

// cluster is one project's cluster: its settings and its current client,
// rebuilt when the kubeconfig (or the CA file it names) changes. Client
// certificate and token files are re-read by client-go itself.
type cluster struct {
	cfg    config.KubeCluster
	pod    config.KubePod
	shapes []nsShape
	qps    float32
	burst  int

	mu      sync.Mutex
	cur     *clients
	stamp   string
	checked time.Time
}

// clients is one generation of a cluster's API clients.
type clients struct {
	rest *rest.Config
	cs   kubernetes.Interface
}

func newCluster(k *config.Kube, c config.KubeCluster) *cluster {
	return &cluster{
		cfg:    c,
		pod:    k.PodFor(c),
		shapes: []nsShape{shapeOf(c.ToolNamespace(), c.Name), shapeOf(c.UserNamespace(), c.Name)},
		qps:    k.QPS,
		burst:  k.Burst,
	}
}

// clients returns the current clients, reloading the kubeconfig first if
// it changed. A kubeconfig that became unreadable keeps the last good
// clients (and the error is returned only if there are none).
func (c *cluster) clients() (*clients, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.cur != nil && now.Sub(c.checked) < reloadCheck {
		return c.cur, false, nil
	}
	c.checked = now
	stamp := c.fileStamp()
	if c.cur != nil && stamp == c.stamp {
		return c.cur, false, nil
	}
	cl, err := c.load()
	if err != nil {
		if c.cur != nil {
			return c.cur, false, err
		}
		return nil, false, err
	}
	reloaded := c.cur != nil
	c.cur, c.stamp = cl, stamp
	return cl, reloaded, nil
}

// fileStamp identifies the kubeconfig's content (size, mtime, inode), and
// its CA file's.
func (c *cluster) fileStamp() string {
	stamp := statStamp(c.cfg.Kubeconfig)
	if c.cur != nil && c.cur.rest.TLSClientConfig.CAFile != "" {
		stamp += "|" + statStamp(c.cur.rest.TLSClientConfig.CAFile)
	}
	return stamp
}

func statStamp(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "missing"
	}
	return fmt.Sprintf("%d/%d/%v", fi.Size(), fi.ModTime().UnixNano(), fi.Sys())
}

func (c *cluster) load() (*clients, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: c.cfg.Kubeconfig}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: c.cfg.Context}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", c.cfg.Kubeconfig, err)
	}
	rc.QPS, rc.Burst = c.qps, c.burst
	rc.UserAgent = "bastion"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: clientset: %w", c.cfg.Kubeconfig, err)
	}
	return &clients{rest: rc, cs: cs}, nil
}

// shouldFallback: WebSocket first, SPDY when the upgrade is refused (an
// API server or proxy without WebSocket streaming).
func shouldFallback(err error) bool {
	return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
}

// executor returns an exec executor for url: WebSocket with SPDY fallback.
func (cl *clients) executor(url string) (remotecommand.Executor, error) {
	ws, err := remotecommand.NewWebSocketExecutor(cl.rest, http.MethodGet, url)
	if err != nil {
		return nil, fmt.Errorf("websocket executor: %w", err)
	}
	u, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	sp, err := remotecommand.NewSPDYExecutor(cl.rest, http.MethodPost, u)
	if err != nil {
		return nil, fmt.Errorf("spdy executor: %w", err)
	}
	return remotecommand.NewFallbackExecutor(ws, sp, shouldFallback)
}

// dialer returns a port-forward dialer for url: the WebSocket tunnel with
// SPDY fallback.
func (cl *clients) dialer(url string) (httpstream.Dialer, error) {
	u, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	tunnel, err := portforward.NewSPDYOverWebsocketDialer(u, cl.rest)
	if err != nil {
		return nil, fmt.Errorf("websocket port-forward dialer: %w", err)
	}
	rt, upgrader, err := spdy.RoundTripperFor(cl.rest)
	if err != nil {
		return nil, fmt.Errorf("spdy round tripper: %w", err)
	}
	sp := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	return portforward.NewFallbackDialer(tunnel, sp, shouldFallback), nil
}

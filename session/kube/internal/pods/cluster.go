package pods

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bastion-ssh/bastion/config"
)

// ReloadCheck is how often, at most, a cluster's kubeconfig is looked at
// for changes (on use; there is no goroutine for it).
const ReloadCheck = time.Second

// Cluster is one project's cluster: its settings and its current Client,
// rebuilt when the kubeconfig (or the CA file it names) changes. Client
// certificate and token files are re-read by client-go itself.
type Cluster struct {
	Cfg config.KubeCluster
	Pod config.KubePod // kube.pod with the cluster's overrides

	qps        float32
	burst      int
	apiTimeout time.Duration
	slowFor    time.Duration // kube.start_timeout (timeout.go)
	log        *slog.Logger
	down       unreachableSince // forbidden.go
	answered   lastAnswer       // timeout.go

	mu      sync.Mutex
	cur     *Client
	stamp   string
	checked time.Time
	fixed   bool // UseClient: never reload
}

// NewCluster returns cluster c of k; it loads nothing yet.
func NewCluster(k *config.Kube, c config.KubeCluster, log *slog.Logger) *Cluster {
	return &Cluster{Cfg: c, Pod: k.PodFor(c), qps: k.QPS, burst: k.Burst, apiTimeout: k.APITimeout, slowFor: k.StartTimeout, log: log}
}

// Name is the project's name.
func (c *Cluster) Name() string { return c.Cfg.Name }

// UseClient makes cs the cluster's client for good, in place of the
// kubeconfig (tests: client-go's fake clientset). Exec and port-forward
// need a real rest config and do not work through it.
func (c *Cluster) UseClient(cs kubernetes.Interface) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur, c.fixed = &Client{cluster: c, cs: cs, start: cs, rest: &rest.Config{}, timeout: c.apiTimeout}, true
}

// Client returns the current client, reloading the kubeconfig first if
// it changed (and logging so). A kubeconfig that became unreadable keeps
// the last good client, with a warning; with none, the user reads that
// the cluster is unavailable.
func (c *Cluster) Client() (*Client, error) {
	cl, reloaded, err := c.client()
	if err != nil && cl == nil {
		return nil, UnavailableError(c.Cfg.Name, err)
	}
	if err != nil {
		c.log.Warn("kubeconfig changed but cannot be loaded; keeping the previous one", "project", c.Cfg.Name, "err", err)
	}
	if reloaded {
		c.log.Info("kubeconfig reloaded", "project", c.Cfg.Name, "file", c.Cfg.Kubeconfig)
	}
	return cl, nil
}

// Current is Client without the log lines and the user's message: for
// the backend's own loops (heartbeat, sweep, readiness).
func (c *Cluster) Current() (*Client, error) {
	cl, _, err := c.client()
	if cl != nil {
		return cl, nil
	}
	return nil, err
}

func (c *Cluster) client() (*Client, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.cur != nil && (c.fixed || now.Sub(c.checked) < ReloadCheck) {
		return c.cur, false, nil
	}
	c.checked = now
	stamp := c.fileStamp()
	if c.cur != nil && stamp == c.stamp {
		return c.cur, false, nil
	}
	cl, err := c.load()
	if err != nil {
		return c.cur, false, err
	}
	reloaded := c.cur != nil
	c.cur, c.stamp = cl, stamp
	return cl, reloaded, nil
}

// fileStamp identifies the kubeconfig's content (size, mtime, inode), and
// its CA file's.
func (c *Cluster) fileStamp() string {
	stamp := statStamp(c.Cfg.Kubeconfig)
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

func (c *Cluster) load() (*Client, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: c.Cfg.Kubeconfig}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: c.Cfg.Context}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", c.Cfg.Kubeconfig, err)
	}
	rc.QPS, rc.Burst = c.qps, c.burst
	rc.UserAgent = "bastion"
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &timedRequests{next: rt, project: c.Cfg.Name} })
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &forbiddenRetry{next: rt, down: &c.down, answered: &c.answered, project: c.Cfg.Name, log: c.log}
	})
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: clientset: %w", c.Cfg.Kubeconfig, err)
	}
	// The start-up client: the same limits, its own limiter (Client.start),
	// and the API timeout on each request once it is sent, not on the
	// wait in the limiter's queue (requestTimeout).
	src := rest.CopyConfig(rc)
	src.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &requestTimeout{next: rt, timeout: c.apiTimeout, slowFor: c.slowFor, answered: &c.answered, project: c.Cfg.Name, log: c.log}
	})
	start, err := kubernetes.NewForConfig(src)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: clientset: %w", c.Cfg.Kubeconfig, err)
	}
	return &Client{cluster: c, cs: cs, start: start, rest: rc, timeout: c.apiTimeout}, nil
}

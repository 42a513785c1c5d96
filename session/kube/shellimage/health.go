package shellimage

import (
	"context"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// Config is what Health needs from the kube backend.
type Config struct {
	Kube     *config.Kube
	Clusters []*pods.Cluster // in config order

	// ShellPod is acct's shell pod spec in cl, namespace ns, without the
	// account's Kubernetes credentials: what a probe pod is made from.
	ShellPod func(cl *pods.Cluster, acct auth.Account, ns string) *corev1.Pod
	// UserNamespace is cl's namespace for a person called account: where
	// probes run unless kube.preflight.namespace says otherwise.
	UserNamespace func(cl *pods.Cluster, account string) string

	Log *slog.Logger
}

// Health is what this replica knows about the clusters' shell images.
type Health struct {
	cfg Config
	ctx context.Context // the backend's lifetime
	wg  sync.WaitGroup  // the pre-flight loop

	mu       sync.Mutex
	clusters map[string]*imageState
	pending  map[string]string // clusters whose pre-flight is due, and why
	kick     chan struct{}
	running  bool // the pre-flight loop runs (Start)

	gaugeMu sync.Mutex // one gauge update at a time
	series  imageSeries
}

// New returns the shell-image state of cfg's clusters, which lives until
// ctx ends. It probes nothing until Start or Check.
func New(ctx context.Context, cfg Config) *Health {
	return &Health{cfg: cfg, ctx: ctx, clusters: map[string]*imageState{}, kick: make(chan struct{}, 1)}
}

// imageState is one cluster's.
type imageState struct {
	bad    map[string]badMark     // images found unavailable
	probes map[string]ProbeResult // the last pre-flight result per image
}

type badMark struct {
	at     time.Time
	reason string
}

// stateOf returns cluster name's state; h.mu must be held.
func (h *Health) stateOf(name string) *imageState {
	st := h.clusters[name]
	if st == nil {
		st = &imageState{bad: map[string]badMark{}, probes: map[string]ProbeResult{}}
		h.clusters[name] = st
	}
	return st
}

// request asks the pre-flight loop to check cluster (all clusters if
// empty) soon; it never blocks.
func (h *Health) request(cluster, why string) {
	h.mu.Lock()
	if h.pending == nil {
		h.pending = map[string]string{}
	}
	if _, ok := h.pending[cluster]; !ok {
		h.pending[cluster] = why
	}
	h.mu.Unlock()
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// takePending returns and clears the pending requests.
func (h *Health) takePending() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pending
	h.pending = nil
	return p
}

// Images is cluster cl's shell images, the primary first.
func (h *Health) Images(cl *pods.Cluster) []string { return h.cfg.Kube.Images(cl.Cfg) }

// Order is the order in which a new pod tries cl's images: those not
// known to be unavailable first, then the others (a last resort: one may
// have come back).
func (h *Health) Order(cl *pods.Cluster) []string {
	all := h.Images(cl)
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.stateOf(cl.Name())
	var good, bad []string
	for _, img := range all {
		if _, ok := st.bad[img]; ok {
			bad = append(bad, img)
		} else {
			good = append(good, img)
		}
	}
	return append(good, bad...)
}

// MarkUnavailable records that a shell pod could not pull image, and asks
// for a pre-flight of the cluster (which also sets the metric).
func (h *Health) MarkUnavailable(cl *pods.Cluster, image, reason string) {
	h.mu.Lock()
	h.stateOf(cl.Name()).bad[image] = badMark{at: time.Now(), reason: reason}
	running := h.running
	h.mu.Unlock()
	if running {
		h.request(cl.Name(), "a shell pod could not pull "+image)
	}
}

// Unavailable reports whether image of cl is marked unavailable.
func (h *Health) Unavailable(cl *pods.Cluster, image string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.stateOf(cl.Name()).bad[image]
	return ok
}

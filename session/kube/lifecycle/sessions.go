package lifecycle

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// Config is what the tracker needs to know.
type Config struct {
	// Replica is this bastion's name in the pods' session annotations.
	Replica  string
	Clusters []*pods.Cluster // swept in this order

	IdleTimeout time.Duration
	// DetachedMaxAge: an idle pod in which the account's detached
	// processes run is kept for up to this long after its last activity;
	// 0: detached processes keep no pod.
	DetachedMaxAge    time.Duration
	StartTimeout      time.Duration
	HeartbeatInterval time.Duration
	SweepInterval     time.Duration

	Log   *slog.Logger
	Audit *audit.Log // pod.reaped events; nil: none
}

// Tracker is this replica's view of the shell pods it has sessions in.
type Tracker struct {
	cfg Config
	ctx context.Context // the backend's lifetime

	mu   sync.Mutex
	uses map[string]*Use

	wg sync.WaitGroup // the loops and the pod watches
}

// New returns a tracker that lives until ctx ends.
func New(ctx context.Context, cfg Config) *Tracker {
	return &Tracker{cfg: cfg, ctx: ctx, uses: map[string]*Use{}}
}

// Start runs the heartbeat and the sweep until the tracker's context
// ends.
func (t *Tracker) Start() {
	t.wg.Go(func() { t.heartbeat(t.ctx) })
	t.wg.Go(func() { t.sweep(t.ctx) })
}

// Wait waits for every goroutine the tracker started; its context must
// have ended.
func (t *Tracker) Wait() { t.wg.Wait() }

// StaleAfter is how long a replica's entry counts without a heartbeat.
func (t *Tracker) StaleAfter() time.Duration { return 3 * t.cfg.HeartbeatInterval }

// entry is one replica's annotation value.
type entry struct {
	N int   `json:"n"`
	T int64 `json:"t"`
}

// Use is one pod this replica has (or just had) sessions in.
type Use struct {
	key     string
	cluster *pods.Cluster
	ns      string
	name    string

	// n and inst are guarded by Tracker.mu.
	n    int
	inst *Instance

	pub chan struct{} // a one-slot lock serialising publications
}

// Name is the pod's name.
func (u *Use) Name() string { return u.name }

// Instance is one incarnation (UID) of a pod that sessions run in, and
// the watch that notices it going away.
type Instance struct {
	uid    types.UID
	gone   chan struct{}
	reason string // why it went, set before gone is closed
	stop   context.CancelFunc
}

// Gone is closed when the pod has gone away under its sessions.
func (i *Instance) Gone() <-chan struct{} { return i.gone }

// Reason says how it went ("was deleted", "was evicted (...)", ...);
// read it once Gone is closed.
func (i *Instance) Reason() string { return i.reason }

func useKey(project, ns, name string) string { return project + "/" + ns + "/" + name }

// Track counts one more session in pod ns/name of cl and returns its
// record.
func (t *Tracker) Track(cl *pods.Cluster, ns, name string) *Use {
	key := useKey(cl.Name(), ns, name)
	t.mu.Lock()
	defer t.mu.Unlock()
	u := t.uses[key]
	if u == nil {
		u = &Use{key: key, cluster: cl, ns: ns, name: name, pub: make(chan struct{}, 1)}
		t.uses[key] = u
	}
	u.n++
	return u
}

// Untrack counts one session fewer, stops watching the pod when it was
// the last, and publishes the new count (best effort: the sweep copes
// with a count that was never lowered, once its heartbeat goes stale).
func (t *Tracker) Untrack(u *Use) {
	t.mu.Lock()
	u.n--
	var stop context.CancelFunc
	if u.n == 0 && u.inst != nil {
		stop = u.inst.stop
		u.inst = nil
	}
	t.mu.Unlock()
	if stop != nil {
		stop()
	}
	if _, err := t.Publish(t.ctx, u); err != nil {
		t.cfg.Log.Debug("publish session count", "pod", u.key, "err", err)
	}
	t.mu.Lock()
	if u.n == 0 && t.uses[u.key] == u {
		delete(t.uses, u.key)
	}
	t.mu.Unlock()
}

// sessions is how many sessions this replica has in pod of project (0
// when it does not track it).
func (t *Tracker) sessions(project string, pod *corev1.Pod) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u := t.uses[useKey(project, pod.Namespace, pod.Name)]; u != nil {
		return u.n
	}
	return 0
}

// Publish writes this replica's current session count to the pod and
// returns the pod as patched (NotFound: there is no such pod).
func (t *Tracker) Publish(ctx context.Context, u *Use) (*corev1.Pod, error) {
	select {
	case u.pub <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-u.pub }()
	t.mu.Lock()
	n := u.n
	t.mu.Unlock()
	c, err := u.cluster.Current()
	if err != nil {
		return nil, err
	}
	patch, err := sessionsPatch(t.cfg.Replica, n, time.Now())
	if err != nil {
		return nil, err
	}
	return c.Patch(ctx, u.ns, u.name, patch)
}

// Annotate puts u's count on pod, a pod about to be created.
func (t *Tracker) Annotate(pod *corev1.Pod, u *Use) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pod.Annotations[sessionAnnotation(t.cfg.Replica)] = sessionValue(u.n, time.Now())
}

// InUse reports whether a session other than the caller's uses pod of
// project: another of this replica's, or a fresh entry of another
// replica. An outdated pod that is not in use is replaced at once.
func (t *Tracker) InUse(project string, pod *corev1.Pod) bool {
	now := time.Now()
	for replica, e := range entries(pod) {
		if replica == t.cfg.Replica {
			if t.sessions(project, pod) > 1 {
				return true
			}
			continue
		}
		if e.N > 0 && now.Sub(time.Unix(e.T, 0)) < t.StaleAfter() {
			return true
		}
	}
	return false
}

func sessionAnnotation(replica string) string { return pods.AnnoSessionsPrefix + replica }

func sessionValue(n int, now time.Time) string {
	v, _ := json.Marshal(entry{N: n, T: now.Unix()})
	return string(v)
}

func sessionsPatch(replica string, n int, now time.Time) ([]byte, error) {
	p := map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		sessionAnnotation(replica): sessionValue(n, now),
	}}}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("session patch: %w", err)
	}
	return data, nil
}

// entries reads every replica's entry on a pod. Malformed values are
// skipped.
func entries(pod *corev1.Pod) map[string]entry {
	out := map[string]entry{}
	for k, v := range pod.Annotations {
		replica, ok := strings.CutPrefix(k, pods.AnnoSessionsPrefix)
		if !ok || replica == "" {
			continue
		}
		var e entry
		if err := json.Unmarshal([]byte(v), &e); err != nil {
			// An older or hand-written value: "N" alone.
			n, err := strconv.Atoi(v)
			if err != nil {
				continue
			}
			e.N = n
		}
		out[replica] = e
	}
	return out
}

// heartbeat refreshes the annotations of the pods this replica has
// sessions in, every interval, until ctx ends. A pod whose sessions are
// all still being set up (no Instance yet: the pod is made with their
// count, or acquire publishes it) is left alone: in a login storm, most
// of them do not exist yet.
func (t *Tracker) heartbeat(ctx context.Context) {
	pods.Every(ctx, t.cfg.HeartbeatInterval, t.heartbeatOnce)
}

// heartbeatOnce is one round of the heartbeat.
func (t *Tracker) heartbeatOnce(ctx context.Context) {
	t.mu.Lock()
	var live []*Use
	for _, u := range t.uses {
		if u.n > 0 && u.inst != nil {
			live = append(live, u)
		}
	}
	t.mu.Unlock()
	for _, u := range live {
		if _, err := t.Publish(ctx, u); err != nil {
			t.cfg.Log.Warn("session heartbeat failed", "pod", u.key, "err", err)
		}
	}
}

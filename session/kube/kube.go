package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
	"github.com/bastion-ssh/bastion/session/kube/lifecycle"
	"github.com/bastion-ssh/bastion/session/kube/shellimage"
)

var _ session.Backend = (*Backend)(nil)

// Config is what a kube backend is made from.
type Config struct {
	Kube  config.Kube // validated
	Log   *slog.Logger
	Audit *audit.Log // pod.created and pod.reaped events; nil: none
}

// Backend runs each account's sessions in its shell pod in its project's
// cluster.
type Backend struct {
	cfg      config.Kube
	log      *slog.Logger
	audit    *audit.Log
	replica  string
	clusters map[string]*pods.Cluster
	order    []*pods.Cluster
	shapes   []nsShape

	ctx    context.Context // the backend's lifetime: New to Close
	cancel context.CancelFunc

	pods   *lifecycle.Tracker // session counts, pod watches, reaping
	images *shellimage.Health // fallbacks and pre-flight

	mu       sync.Mutex
	failures map[string]int64 // start failures by reason

	// wg owns the goroutines the backend starts itself: stdin readers
	// (which may outlive a Run), signal forwarders and port-forward
	// readers.
	wg sync.WaitGroup

	// relayWrap, in tests, goes before the relay's argv in the pod (a
	// relay slow to start).
	relayWrap []string
}

// New returns a kube backend for cfg that lives until ctx ends or Close
// is called. It loads no kubeconfig yet: a cluster that is down must not
// stop bastion from starting. Start starts the loops (heartbeat, sweep,
// pre-flight); a one-off command (bastion images) does without them.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	k := cfg.Kube
	if len(k.Clusters) == 0 {
		return nil, errors.New("kube: no clusters configured")
	}
	replica := k.ReplicaID
	if replica == "" {
		host, _ := os.Hostname()
		host, _ = dnsSafe(host)
		if len(host) > 40 {
			host = host[:40]
		}
		replica = strings.Trim(host+"-"+newToken()[:6], "-")
	}
	b := &Backend{
		cfg:      k,
		log:      cfg.Log,
		audit:    cfg.Audit,
		replica:  replica,
		clusters: map[string]*pods.Cluster{},
		failures: map[string]int64{},
	}
	for _, c := range k.Clusters {
		cl := pods.NewCluster(&b.cfg, c, b.log)
		b.clusters[c.Name] = cl
		b.order = append(b.order, cl)
		b.shapes = append(b.shapes, shapeOf(c.ToolNamespace(), c.Name), shapeOf(c.UserNamespace(), c.Name))
		if !config.PinnedImage(cl.Pod.Image) {
			b.log.Warn("the shell image is not pinned by digest; pin it (image@sha256:...) so that every pod runs the same, known image",
				"project", c.Name, "image", cl.Pod.Image)
		}
	}
	b.ctx, b.cancel = context.WithCancel(ctx)
	b.pods = lifecycle.New(b.ctx, lifecycle.Config{
		Replica:           replica,
		Clusters:          b.order,
		IdleTimeout:       k.IdleTimeout,
		DetachedMaxAge:    k.DetachedMaxAge,
		StartTimeout:      k.StartTimeout,
		HeartbeatInterval: k.HeartbeatInterval,
		SweepInterval:     k.SweepInterval,
		Log:               b.log,
		Audit:             b.audit,
	})
	b.images = shellimage.New(b.ctx, shellimage.Config{
		Kube:     &b.cfg,
		Clusters: b.order,
		ShellPod: probeSpec,
		UserNamespace: func(cl *pods.Cluster, account string) string {
			return expandNamespace(cl.Cfg.UserNamespace(), cl.Name(), account)
		},
		Log: b.log,
	})
	return b, nil
}

// Start runs the session heartbeat, the pod sweep and the shell-image
// pre-flight until the backend's context ends or Close is called. Call it
// once.
func (b *Backend) Start() {
	b.log.Info("kube backend started", "replica", b.replica, "projects", len(b.order),
		"idle_timeout", b.cfg.IdleTimeout, "sweep_interval", b.cfg.SweepInterval)
	b.pods.Start()
	b.images.Start() // in the background: a cluster that is down does not hold up start-up
}

// Close stops the loops and waits for every goroutine the backend
// started; the streams of finished sessions must have been closed.
func (b *Backend) Close() {
	b.cancel()
	b.pods.Wait()
	b.images.Wait()
	b.wg.Wait()
}

// StartFailures returns how often shell pods could not start, by reason
// (ErrImagePull, Unschedulable, StartTimeout, ...).
func (b *Backend) StartFailures() map[string]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.failures)
}

func (b *Backend) countStartFailure(project, reason string) int64 {
	b.mu.Lock()
	b.failures[reason]++
	n := b.failures[reason]
	b.mu.Unlock()
	ops.PodStartFailures.WithLabelValues(project, reason).Inc()
	return n
}

// Ping reports whether at least one cluster's API server answers;
// readiness asks it.
func (b *Backend) Ping(ctx context.Context) error {
	var errs []error
	for _, cl := range b.order {
		c, err := cl.Current()
		if err == nil {
			err = c.Ping(ctx)
		}
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("cluster %s: %w", cl.Name(), err))
	}
	return errors.Join(errs...)
}

// CheckImages runs a pre-flight probe of every shell image of every
// cluster and returns the results in config order, recording nothing
// (bastion check-config --preflight).
func (b *Backend) CheckImages(ctx context.Context) []shellimage.ProbeResult {
	return b.images.Check(ctx)
}

// Inventory lists every cluster's shell images (bastion images).
func (b *Backend) Inventory(ctx context.Context) []shellimage.ClusterImages {
	return b.images.Inventory(ctx)
}

// ImagesReady is the readiness check of the shell images
// (shellimage.Health.Ready).
func (b *Backend) ImagesReady(ctx context.Context) error { return b.images.Ready(ctx) }

// Recheck runs pre-flight again for every cluster soon (a config
// reload); it does not wait.
func (b *Backend) Recheck(why string) { b.images.Recheck(why) }

// resolve chooses r's project cluster and classifies its account.
func (b *Backend) resolve(r session.Request) (*pods.Cluster, identity, error) {
	project, ok := projectOf(&b.cfg, r.User)
	if !ok {
		name := r.Account.Name
		if r.User != nil {
			name = r.User.Name
		}
		return nil, identity{}, session.UserErrorf(fmt.Errorf("user %s matches no project", name),
			fmt.Sprintf("%s is not a member of any project with shell access here; ask your project's admins", name))
	}
	cl := b.clusters[project]
	if cl == nil {
		return nil, identity{}, fmt.Errorf("project %q has no cluster", project)
	}
	id := who(r.User, r.Account, b.cfg.ToolPrefix, project)
	if id.acct.UID <= 0 || id.acct.GID < 0 {
		return nil, identity{}, session.UserErrorf(fmt.Errorf("account %s has uid %d", id.acct.Name, id.acct.UID),
			"your account has no usable uid for a shell here; contact the operators")
	}
	return cl, id, nil
}

// Run runs r in the account's shell pod, creating the pod if needed.
func (b *Backend) Run(ctx context.Context, r session.Request) (session.ExitStatus, error) {
	cl, id, err := b.resolve(r)
	if err != nil {
		return session.ExitStatus{}, err
	}
	c, err := cl.Client()
	if err != nil {
		return session.ExitStatus{}, err
	}
	ns := namespaceFor(cl.Cfg, id)
	var prog *progress
	if r.TTY != nil {
		prog = newProgress(r.Stdout, cl.Name())
	}
	pod, u, inst, err := b.acquire(ctx, c, id, ns, prog, noticeTo(r))
	if err != nil {
		return session.ExitStatus{}, err
	}
	defer b.pods.Untrack(u)
	st, err := b.execIn(ctx, c, pod, inst, r)
	if err == nil && ctx.Err() == nil && (r.TTY != nil || r.Command == "") {
		b.tellDetached(ctx, c, pod, noticeTo(r))
	}
	return st, err
}

// tellDetached tells a user whose interactive shell ended, in one line,
// that their detached processes keep the pod (one scan per such logout).
// It does not wait for the pod's last session: what this replica tracks
// includes the shell's own listeners (become, agent), still open here,
// and the line stays true while other sessions run.
func (b *Backend) tellDetached(ctx context.Context, c *pods.Client, pod *corev1.Pod, notice func(string)) {
	if notice == nil || b.cfg.DetachedMaxAge <= 0 {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d, err := lifecycle.ScanDetached(sctx, c, pod)
	if err != nil {
		b.log.Debug("detached processes at logout", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		return
	}
	if d.N() > 0 {
		notice(detachedNotice(c.Project(), d.N(), b.cfg.DetachedMaxAge))
	}
}

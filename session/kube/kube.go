package kube

import (
	"context"
	"errors"
	"fmt"
	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/ops"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session"
)

// Backend runs each account's sessions in its shell pod in its project's
// cluster.
type Backend struct {
	cfg      config.Kube
	log      *slog.Logger
	replica  string
	clusters map[string]*cluster
	order    []*cluster
	shapes   []nsShape

	ctx    context.Context // the backend's lifetime: Start to Close
	cancel context.CancelFunc

	mu       sync.Mutex
	tracked  map[string]*tracked
	failures map[string]int64 // start failures by reason

	audit *audit.Log // pod.created and pod.reaped events; nil: none

	images shellImages // fallbacks and pre-flight (fallback.go, preflight.go)

	// wg owns every goroutine the backend starts: loops, pod watches,
	// stdin readers (which may outlive a Run) and port-forward readers.
	wg sync.WaitGroup
}

// New returns a kube backend for cfg (validated) that lives until ctx ends
// or Close is called. It loads no kubeconfig yet: a cluster that is down
// must not stop bastion from starting. Start starts the heartbeat and the
// sweep; a one-off command (bastion images) does without them.
func New(ctx context.Context, cfg config.Kube, log *slog.Logger) (*Backend, error) {
	if len(cfg.Clusters) == 0 {
		return nil, errors.New("kube: no clusters configured")
	}
	replica := cfg.ReplicaID
	if replica == "" {
		host, _ := os.Hostname()
		host, _ = dnsSafe(host)
		if len(host) > 40 {
			host = host[:40]
		}
		replica = strings.Trim(host+"-"+newToken()[:6], "-")
	}
	b := &Backend{
		cfg:      cfg,
		log:      log,
		replica:  replica,
		clusters: map[string]*cluster{},
		tracked:  map[string]*tracked{},
		failures: map[string]int64{},
	}
	for _, c := range cfg.Clusters {
		cl := newCluster(&cfg, c)
		b.clusters[c.Name] = cl
		b.order = append(b.order, cl)
		b.shapes = append(b.shapes, cl.shapes...)
		if !pinned(cl.pod.Image) {
			log.Warn("the shell image is not pinned by digest; pin it (image@sha256:...) so that every pod runs the same, known image",
				"project", c.Name, "image", cl.pod.Image)
		}
	}
	routeClientGoLogs(log)
	b.ctx, b.cancel = context.WithCancel(ctx)
	return b, nil
}

// routeClientGoLogs sends client-go's own log lines (klog) to log at debug
// level: they report, as errors, what is routine here (a stream closed
// when its session ended).
func routeClientGoLogs(log *slog.Logger) {
	// klog's logger is process-wide and SetLogger is not safe to call
	// concurrently (two backends made at once, as in tests).
	klogMu.Lock()
	defer klogMu.Unlock()
	klog.SetLogger(logr.FromSlogHandler(debugOnly{log.With("component", "client-go").Handler()}))
}

var klogMu sync.Mutex

// debugOnly logs every record at debug level.
type debugOnly struct{ h slog.Handler }

func (d debugOnly) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.h.Enabled(ctx, slog.LevelDebug)
}
func (d debugOnly) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return d.h.Handle(ctx, r)
}
func (d debugOnly) WithAttrs(a []slog.Attr) slog.Handler { return debugOnly{d.h.WithAttrs(a)} }
func (d debugOnly) WithGroup(g string) slog.Handler      { return debugOnly{d.h.WithGroup(g)} }

// Start runs the session heartbeat and the pod sweep until the backend's
// context ends or Close is called. Call it once.
func (b *Backend) Start() {
	b.log.Info("kube backend started", "replica", b.replica, "projects", len(b.order),
		"idle_timeout", b.cfg.IdleTimeout, "sweep_interval", b.cfg.SweepInterval)
	b.wg.Add(2)
	go func() { defer b.wg.Done(); b.heartbeat(b.ctx) }()
	go func() { defer b.wg.Done(); b.sweep(b.ctx) }()
}

// Close stops the loops and waits for every goroutine the backend
// started; the streams of finished sessions must have been closed.
func (b *Backend) Close() {
	b.cancel()
	b.wg.Wait()
}

// Replica is this bastion's name in the pods' session annotations.
func (b *Backend) Replica() string { return b.replica }

// StartFailures returns how often shell pods could not start, by reason
// (ErrImagePull, Unschedulable, StartTimeout, ...).
func (b *Backend) StartFailures() map[string]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.failures)
}

// SetAudit makes the backend write pod.created and pod.reaped audit
// events; call it before Start.
func (b *Backend) SetAudit(a *audit.Log) { b.audit = a }

func (b *Backend) countStartFailure(cl *cluster, reason string) {
	b.mu.Lock()
	b.failures[reason]++
	b.mu.Unlock()
	ops.PodStartFailures.WithLabelValues(cl.cfg.Name, reason).Inc()
}

// Ping reports whether at least one cluster's API server answers;
// readiness asks it.
func (b *Backend) Ping(ctx context.Context) error {
	var errs []error
	for _, cl := range b.order {
		cs, _, err := cl.clients()
		if err == nil {
			_, err = cs.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		}
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("cluster %s: %w", cl.cfg.Name, err))
	}
	return errors.Join(errs...)
}

func (b *Backend) startFailures(reason string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures[reason]
}

// resolve chooses r's project cluster and classifies its account.
func (b *Backend) resolve(r session.Request) (*cluster, identity, error) {
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

// clientsFor returns cl's current clients, logging a kubeconfig reload.
func (b *Backend) clientsFor(cl *cluster) (*clients, error) {
	cs, reloaded, err := cl.clients()
	if err != nil && cs == nil {
		return nil, unavailableError(cl, err)
	}
	if err != nil {
		b.log.Warn("kubeconfig changed but cannot be loaded; keeping the previous one", "project", cl.cfg.Name, "err", err)
	}
	if reloaded {
		b.log.Info("kubeconfig reloaded", "project", cl.cfg.Name, "file", cl.cfg.Kubeconfig)
	}
	return cs, nil
}

// Run runs r in the account's shell pod, creating the pod if needed.
func (b *Backend) Run(ctx context.Context, r session.Request) (session.ExitStatus, error) {
	cl, id, err := b.resolve(r)
	if err != nil {
		return session.ExitStatus{}, err
	}
	cs, err := b.clientsFor(cl)
	if err != nil {
		return session.ExitStatus{}, err
	}
	ns := namespaceFor(cl.cfg, id)
	var prog *progress
	if r.TTY != nil {
		prog = newProgress(r.Stdout, cl.cfg.Name)
	}
	pod, t, inst, err := b.acquire(ctx, cl, cs, id, ns, prog, noticeTo(r))
	if err != nil {
		return session.ExitStatus{}, err
	}
	defer b.untrack(t)
	return b.execIn(ctx, cl, cs, pod, inst, r)
}

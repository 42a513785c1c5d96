package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/internal/memtrim"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/sshd"
)

// startup carries what dev mode wants printed once the server listens.
type startup struct {
	stdout io.Writer
	lines  func(addr net.Addr) []string
}

// pinger is a dependency that can say whether it answers (a directory, a
// backend's clusters). Readiness asks it.
type pinger interface {
	Ping(ctx context.Context) error
}

// imageChecker is a backend with shell-image pre-flight (kube):
// readiness asks it, and every reload runs pre-flight again.
type imageChecker interface {
	ImagesReady(ctx context.Context) error
	Recheck(why string)
}

// serve runs the server until SIGTERM/SIGINT. It reloads with load on
// SIGHUP and when one of the watched files (the config file, host keys)
// changes; load == nil means there is nothing to reload from.
func serve(cfg config.Config, load func() (config.Config, error), watched []string, log *slog.Logger, su *startup) int {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	signers, err := sshd.LoadHostKeys(cfg.SSH.HostKeys)
	if err != nil {
		log.Error("cannot load host keys", "key", "ssh.host_keys", "err", err)
		return 1
	}
	trust, err := loadTrust(cfg.SSH)
	if err != nil {
		log.Error("cannot load user CA keys or revoked keys", "err", err)
		return 1
	}
	auditLog, err := audit.Open(cfg.Audit.Output, log)
	if err != nil {
		log.Error("cannot open the audit log", "key", "audit.output", "err", err)
		return 1
	}
	defer auditLog.Close()
	dir, closeDir, err := openDirectory(ctx, cfg, log)
	if err != nil {
		log.Error("cannot open directory", "err", err)
		return 1
	}
	defer closeDir()
	backend, closeBackend, err := openBackend(ctx, cfg, auditLog, log)
	if err != nil {
		log.Error("cannot start backend", "key", "backend", "err", err)
		return 1
	}
	defer closeBackend() // runs after the server has stopped
	if su == nil {       // dev prints it with its start-up lines
		sftp := chooseSFTP(cfg)
		log.Info(sftp.Line, "command", sftp.Command, "key", "ssh.sftp_server")
	}
	srv, err := sshd.New(settingsFrom(cfg, signers, trust), sshd.Deps{Directory: dir, Backend: backend, Audit: auditLog}, log)
	if err != nil {
		log.Error("cannot start server", "err", err)
		return 1
	}

	var opsSrv *ops.Server
	if cfg.Ops.Listen != "" {
		checks := []ops.Check{{Name: "host keys", Probe: func(context.Context) error { return nil }}}
		if p, ok := dir.(pinger); ok {
			checks = append(checks, ops.Check{Name: "directory", Probe: p.Ping})
		}
		if p, ok := backend.(pinger); ok {
			checks = append(checks, ops.Check{Name: "backend", Probe: p.Ping})
		}
		if p, ok := backend.(imageChecker); ok {
			checks = append(checks, ops.Check{Name: "shell images", Probe: p.ImagesReady})
		}
		opsSrv, err = ops.Listen(cfg.Ops.Listen, checks, log)
		if err != nil {
			log.Error("cannot start the operations listener", "key", "ops.listen", "err", listenHint(errors.Unwrap(err), "ops.listen"))
			return 1
		}
		opsSrv.Start(ctx)
		defer opsSrv.Close()
		log.Info("operations listener", "address", opsSrv.Addr().String(), "paths", "/metrics /healthz /readyz")
	}

	ln, err := net.Listen("tcp", cfg.SSH.Listen)
	if err != nil {
		log.Error("cannot listen", "key", "ssh.listen", "address", cfg.SSH.Listen, "err", listenHint(err, "ssh.listen or --listen"))
		return 1
	}
	log.Info("listening", "address", ln.Addr().String(), "version", version)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	cur := cfg // the config in force, as of the last good reload
	var curFiles atomic.Pointer[[]string]
	setFiles := func(c config.Config) {
		f := append(append([]string{}, watched...), watchedFiles(c)...)
		curFiles.Store(&f)
	}
	setFiles(cfg)
	doReload := func(why string) {
		if load == nil {
			log.Warn("nothing to reload: no config file (dev mode without --config)", "trigger", why)
			return
		}
		next, ok := reload(load, srv, log, why)
		if !ok {
			return
		}
		prev := cur
		cur = next
		setFiles(cur)
		// A file change re-runs pre-flight only when the images changed
		// (a log file beside the config must not start probe pods); a
		// SIGHUP is the operator asking, e.g. after re-importing an image.
		if p, ok := backend.(imageChecker); ok && (why == "SIGHUP" || imagesChanged(prev, cur)) {
			p.Recheck(why) // pre-flight again, in the background
		}
	}
	changed := make(chan struct{}, 1)
	w, err := watchFiles(ctx, func() []string { return *curFiles.Load() }, log, changed)
	if err != nil {
		log.Warn("cannot watch config and key files; reload with SIGHUP", "err", err)
	} else {
		defer w.Close()
	}

	// Give the garbage of a burst of logins back once it is over
	// (internal/memtrim); it stops with ctx, before serve returns.
	var trim sync.WaitGroup
	defer trim.Wait()
	defer stop()
	trim.Go(func() { memtrim.New(log).Run(ctx) })

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	if su != nil {
		for _, l := range su.lines(ln.Addr()) {
			fmt.Fprintln(su.stdout, l)
		}
	}
	for {
		select {
		case err := <-served:
			if !errors.Is(err, sshd.ErrServerClosed) {
				log.Error("server stopped", "err", err)
				return 1
			}
			return 0
		case <-changed:
			doReload("file changed")
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				doReload("SIGHUP")
				continue
			}
			if opsSrv != nil {
				opsSrv.SetDraining() // load balancers stop sending new connections at once
			}
			grace := cur.Limits.ShutdownGrace
			log.Info("shutting down", "signal", sig.String(), "grace", grace)
			sctx, cancel := context.WithTimeout(ctx, grace)
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				_ = srv.Shutdown(sctx)
			}()
		drain:
			for {
				select {
				case <-stopped:
					break drain
				case sig := <-sigs:
					if sig == syscall.SIGHUP {
						continue
					}
					// A second SIGTERM/SIGINT: the operator wants out
					// now, whatever is still running.
					log.Warn("second signal: exiting without waiting for sessions", "signal", sig.String())
					os.Exit(1)
				}
			}
			cancel()
			<-served
			log.Info("stopped")
			return 0
		}
	}
}

func reload(load func() (config.Config, error), srv *sshd.Server, log *slog.Logger, why string) (config.Config, bool) {
	cfg, err := load()
	if err == nil {
		var signers sshd.HostKeys
		signers, err = sshd.LoadHostKeys(cfg.SSH.HostKeys)
		var trust *auth.Trust
		if err == nil {
			trust, err = loadTrust(cfg.SSH)
		}
		if err == nil {
			err = srv.Reload(settingsFrom(cfg, signers, trust))
		}
	}
	if err != nil {
		ops.Reloads.WithLabelValues("config", "rejected").Inc()
		log.Error("reload rejected; keeping the running config", "trigger", why, "err", err)
		return cfg, false
	}
	ops.Reloads.WithLabelValues("config", "ok").Inc()
	log.Info("config reloaded", "trigger", why)
	return cfg, true
}

// watchedFiles are the files whose content change reloads: the key
// files (trustFiles), the users file and the kubeconfigs.
func watchedFiles(c config.Config) []string {
	files := trustFiles(c.SSH)
	if c.Directory.Type == "static" {
		files = append(files, c.Directory.File)
	}
	if c.Backend.Type == "kube" {
		for _, cl := range c.Kube.Clusters {
			files = append(files, cl.Kubeconfig)
		}
	}
	return files
}

// imagesChanged reports whether the shell images (primary and fallbacks,
// per cluster) or the pre-flight settings differ between two configs:
// only then is pre-flight run again on a reload.
func imagesChanged(a, b config.Config) bool {
	if a.Kube.Preflight != b.Kube.Preflight || len(a.Kube.Clusters) != len(b.Kube.Clusters) {
		return true
	}
	for i := range a.Kube.Clusters {
		ca, cb := a.Kube.Clusters[i], b.Kube.Clusters[i]
		if ca.Name != cb.Name || !slices.Equal(a.Kube.Images(ca), b.Kube.Images(cb)) {
			return true
		}
	}
	return false
}

// trustFiles are the key files a reload re-reads when they change: host
// keys, user CA keys and the revoked-keys file.
func trustFiles(c config.SSH) []string {
	files := append([]string{}, c.HostKeys...)
	files = append(files, c.TrustedUserCAKeys...)
	if c.RevokedKeys != "" {
		files = append(files, c.RevokedKeys)
	}
	return files
}

func settingsFrom(cfg config.Config, signers sshd.HostKeys, trust *auth.Trust) sshd.Settings {
	cfg.SSH.SFTPServer = chooseSFTP(cfg).Command
	return sshd.Settings{
		Trust:       trust,
		SSH:         cfg.SSH,
		Limits:      cfg.Limits,
		Forwarding:  cfg.Forwarding,
		HostKeys:    signers,
		Recording:   cfg.Recording,
		BackendName: cfg.Backend.Type,
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/sshd"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: bastion <command> [flags]

commands:
  dev            run on this machine for the current user (local backend, dev directory)
  serve          run from a config file: bastion serve --config FILE
  check-config   validate a config file: bastion check-config --config FILE
  version        print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "dev":
		return cmdDev(args[1:], stdout, stderr)
	case "serve":
		return cmdServe(args[1:], stderr)
	case "check-config":
		return cmdCheckConfig(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "bastion %s\n", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "bastion: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

func cmdServe(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (YAML)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" {
		fmt.Fprintln(stderr, "bastion serve: --config FILE is required")
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "bastion: %v\n", err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	return serve(cfg, *cfgPath, log, nil)
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (YAML)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" {
		fmt.Fprintln(stderr, "bastion check-config: --config FILE is required")
		return 2
	}
	if _, err := loadConfig(*cfgPath); err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	fmt.Fprintln(stdout, "config ok")
	return 0
}

// loadConfig loads, validates and checks the files a config names, and
// reports every problem at once.
func loadConfig(path string) (config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return cfg, err
	}
	return cfg, checkConfig(&cfg)
}

func checkConfig(cfg *config.Config) error {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	for i, p := range cfg.SSH.HostKeys {
		if p == "" {
			continue
		}
		if _, err := sshd.LoadHostKeys([]string{p}); err != nil {
			errs = append(errs, fmt.Errorf("ssh.host_keys[%d]: %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid config:\n%w", err)
	}
	return nil
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// startup carries what dev mode wants printed once the server listens.
type startup struct {
	stdout io.Writer
	lines  func(addr net.Addr) []string
}

// serve runs the server until SIGTERM/SIGINT, reloading on SIGHUP.
func serve(cfg config.Config, cfgPath string, log *slog.Logger, su *startup) int {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	signers, err := sshd.LoadHostKeys(cfg.SSH.HostKeys)
	if err != nil {
		log.Error("cannot load host keys", "key", "ssh.host_keys", "err", err)
		return 1
	}
	dir, closeDir, err := openDirectory(ctx, cfg, log)
	if err != nil {
		log.Error("cannot open directory", "err", err)
		return 1
	}
	defer closeDir()
	backend, closeBackend, err := openBackend(ctx, cfg, log)
	if err != nil {
		log.Error("cannot start backend", "key", "backend", "err", err)
		return 1
	}
	defer closeBackend() // runs after the server has stopped
	srv, err := sshd.New(settingsFrom(cfg, signers), dir, backend, log)
	if err != nil {
		log.Error("cannot start server", "err", err)
		return 1
	}
	ln, err := net.Listen("tcp", cfg.SSH.Listen)
	if err != nil {
		log.Error("cannot listen", "key", "ssh.listen", "address", cfg.SSH.Listen, "err", listenHint(err))
		return 1
	}
	log.Info("listening", "address", ln.Addr().String(), "version", version)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

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
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reload(cfgPath, srv, log)
				continue
			}
			grace := cfg.Limits.ShutdownGrace
			log.Info("shutting down", "signal", sig.String(), "grace", grace)
			sctx, cancel := context.WithTimeout(ctx, grace)
			go func() {
				// A second signal cuts the grace period short.
				select {
				case <-sigs:
					cancel()
				case <-sctx.Done():
				}
			}()
			_ = srv.Shutdown(sctx)
			cancel()
			<-served
			log.Info("stopped")
			return 0
		}
	}
}

func reload(cfgPath string, srv *sshd.Server, log *slog.Logger) {
	if cfgPath == "" {
		log.Warn("SIGHUP: no config file to reload (dev mode without --config)")
		return
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		log.Error("reload rejected; keeping the running config", "err", err)
		return
	}
	signers, err := sshd.LoadHostKeys(cfg.SSH.HostKeys)
	if err == nil {
		err = srv.Reload(settingsFrom(cfg, signers))
	}
	if err != nil {
		log.Error("reload rejected; keeping the running config", "err", err)
		return
	}
	log.Info("config reloaded", "file", cfgPath)
}

func settingsFrom(cfg config.Config, signers sshd.HostKeys) sshd.Settings {
	return sshd.Settings{
		SSH:         cfg.SSH,
		Limits:      cfg.Limits,
		Forwarding:  cfg.Forwarding,
		HostKeys:    signers,
		BackendName: cfg.Backend.Type,
	}
}

func listenHint(err error) string {
	if errors.Is(err, syscall.EADDRINUSE) {
		return err.Error() + " (another bastion or sshd is using this port; pick another with ssh.listen or --listen)"
	}
	if errors.Is(err, syscall.EACCES) {
		return err.Error() + " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
	}
	return err.Error()
}

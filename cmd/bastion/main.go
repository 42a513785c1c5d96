package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/internal/become"
	"github.com/bastion-ssh/bastion/internal/clip"
	"github.com/bastion-ssh/bastion/internal/sftpserver"
	"github.com/bastion-ssh/bastion/sshd"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: bastion <command> [flags]

commands:
  dev            run on this machine for the current user (local backend, dev directory)
  serve          run from a config file: bastion serve --config FILE
  check-config   validate a config file: bastion check-config --config FILE [--preflight]
  images         the shell images in use, per cluster: bastion images --config FILE [--output json]
  version        print the version
`

func main() {
	closeInherited()
	if os.Getenv("GOGC") == "" {
		// x/crypto allocates a fresh buffer for every packet it reads
		// (transport.go, connectionState.readPacket), so a bulk transfer
		// allocates as much as it moves. Collecting at 200% instead of 100%
		// takes 18% off the CPU per GiB through ssh -L, for about 5 KiB
		// more per idle session (go run ./bench).
		debug.SetGCPercent(200)
	}
	if filepath.Base(os.Args[0]) == "become" {
		// The `become` on a local session's PATH (a link to this binary).
		os.Exit(become.Main(os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
	}
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
	case "images":
		return cmdImages(args[1:], stdout, stderr)
	case "sftp-server":
		// Not in the usage: the sftp subsystem runs it as the account
		// when there is no OpenSSH sftp-server (see chooseSFTP).
		return sftpserver.Main(context.Background(), args[1:], os.Stdin, os.Stdout, stderr)
	case "become":
		// Not in the usage: what `become` in a local session runs.
		return become.Main(args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
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
	path := *cfgPath
	return serve(cfg, func() (config.Config, error) { return loadConfig(path) }, []string{path}, log, nil)
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (YAML)")
	pre := fs.Bool("preflight", false, "also start a probe pod of every shell image in every cluster (kube backend)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" {
		fmt.Fprintln(stderr, "bastion check-config: --config FILE is required")
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	if cfg.Backend.Type == "kube" {
		for _, w := range cfg.Kube.FallbackWarnings() {
			fmt.Fprintln(stdout, "warning: "+w)
		}
	}
	fmt.Fprintln(stdout, "config ok")
	if *pre {
		return preflight(cfg, stdout, stderr)
	}
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
	if _, err := loadTrust(cfg.SSH); err != nil {
		errs = append(errs, err)
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
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if c.Format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	// Whatever a client sent that reaches a log line is cut there too,
	// besides where sshd logs it (a bounded log whatever the caller).
	return slog.New(clip.Handler(h, clip.Attr))
}

func listenHint(err error, key string) string {
	if errors.Is(err, syscall.EADDRINUSE) {
		return err.Error() + " (another process is using this port; pick another with " + key + ")"
	}
	if errors.Is(err, syscall.EACCES) {
		return err.Error() + " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
	}
	return err.Error()
}

// loadTrust reads ssh.trusted_user_ca_keys and ssh.revoked_keys. Every
// problem is reported with its key path.
func loadTrust(c config.SSH) (*auth.Trust, error) {
	t := &auth.Trust{}
	var errs []error
	for i, p := range c.TrustedUserCAKeys {
		if p == "" {
			continue
		}
		cas, err := auth.LoadCAKeys(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("ssh.trusted_user_ca_keys[%d]: %w", i, err))
			continue
		}
		t.CAs = append(t.CAs, cas...)
	}
	if c.RevokedKeys != "" {
		r, err := auth.LoadRevocations(c.RevokedKeys)
		if err != nil {
			errs = append(errs, fmt.Errorf("ssh.revoked_keys: %w", err))
		}
		t.Revoked = r
	}
	return t, errors.Join(errs...)
}

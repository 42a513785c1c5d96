package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/bastion-ssh/bastion/audit"
	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube"
	"github.com/bastion-ssh/bastion/session/local"
)

// openBackend returns the backend named by backend.type and a function
// that releases it once the server has stopped.
func openBackend(ctx context.Context, cfg config.Config, auditLog *audit.Log, log *slog.Logger) (session.Backend, func(), error) {
	switch cfg.Backend.Type {
	case "local":
		b := local.New(log.With("backend", "local"))
		if !b.SwitchesUser() {
			log.Warn("bastion is not running as root: every session runs as bastion's own user, whatever account it logs in to", "uid", os.Getuid())
		}
		provideBecome(log)
		return b, b.Close, nil
	case "kube":
		kl := log.With("backend", "kube")
		routeClientGoLogs(kl)
		b, err := kube.New(ctx, kube.Config{Kube: cfg.Kube, Log: kl, Audit: auditLog})
		if err != nil {
			return nil, nil, err
		}
		b.Start()
		return b, b.Close, nil
	default:
		return nil, nil, fmt.Errorf("backend.type %q is not supported", cfg.Backend.Type)
	}
}

// becomeLink is where `become` goes for the local backend's sessions: a
// directory on the PATH that login profiles keep (Debian's /etc/profile,
// read by every login shell, replaces PATH).
const becomeLink = "/usr/local/bin/become"

// provideBecome makes `become` typed in a local session run this binary:
// as root it links becomeLink to it (linkBecome); otherwise it says how.
func provideBecome(log *slog.Logger) {
	exe, err := os.Executable()
	if err != nil {
		log.Warn("become typed in a shell will not work: cannot find bastion's own binary", "err", err)
		return
	}
	if os.Geteuid() != 0 {
		if t, err := filepath.EvalSymlinks(becomeLink); err == nil && t == exe {
			return
		}
		log.Info("become typed in a shell needs a link to bastion on the sessions' PATH; `ssh -t HOST become TOOL` works without it",
			"fix", "ln -s "+exe+" "+becomeLink+" (or ~/.local/bin/become)")
		return
	}
	changed, err := linkBecome(becomeLink, exe)
	switch {
	case err != nil:
		log.Warn("become typed in a shell will not work", "err", err)
	case changed:
		log.Info("become typed in a shell runs bastion", "link", becomeLink, "target", exe)
	}
	if err == nil && !reachableByAll(exe) {
		log.Warn("become typed in a shell will fail for accounts other than bastion's: its binary is not executable by other users", "path", exe)
	}
}

// linkBecome points the symbolic link at link to exe, unless something
// else is there: a file, or a link to anything not named bastion*
// (someone else's become). It reports whether it changed the link.
func linkBecome(link, exe string) (bool, error) {
	if fi, err := os.Lstat(link); err == nil {
		if fi.Mode()&os.ModeSymlink == 0 {
			return false, fmt.Errorf("%s exists and is not bastion's link; leaving it", link)
		}
		t, err := os.Readlink(link)
		if err != nil {
			return false, fmt.Errorf("read link %s: %w", link, err)
		}
		if t == exe {
			return false, nil
		}
		if !strings.HasPrefix(filepath.Base(t), "bastion") {
			return false, fmt.Errorf("%s links to %s, not to bastion; leaving it", link, t)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("stat %s: %w", link, err)
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return false, fmt.Errorf("link %s: %w", link, err)
	}
	tmp := filepath.Join(filepath.Dir(link), fmt.Sprintf(".become-%d", os.Getpid()))
	_ = os.Remove(tmp)
	if err := os.Symlink(exe, tmp); err != nil {
		return false, fmt.Errorf("link %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return false, fmt.Errorf("link %s: %w", link, err)
	}
	return true, nil
}

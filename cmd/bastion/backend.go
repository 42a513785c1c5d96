package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

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

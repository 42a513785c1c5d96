package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/auth/ldap"
	"github.com/bastion-ssh/bastion/auth/static"
	"github.com/bastion-ssh/bastion/config"
)

// openDirectory returns the directory named by directory.type and a
// function that releases it.
func openDirectory(_ context.Context, cfg config.Config, log *slog.Logger) (auth.Directory, func(), error) {
	switch cfg.Directory.Type {
	case "static":
		d, err := static.Load(cfg.Directory.File, log.With("directory", "static"))
		if err != nil {
			return nil, nil, fmt.Errorf("directory.file: %w", err)
		}
		return d, func() {}, nil
	case "ldap":
		d, err := ldap.New(cfg.LDAP, log.With("directory", "ldap"))
		if err != nil {
			return nil, nil, fmt.Errorf("ldap: %w", err)
		}
		return d, d.Close, nil
	default:
		return nil, nil, fmt.Errorf("directory.type %q is not supported yet", cfg.Directory.Type)
	}
}

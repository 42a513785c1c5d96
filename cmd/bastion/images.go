package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/session/kube"
	"github.com/bastion-ssh/bastion/session/kube/shellimage"
)

// imagesJSON is `bastion images --output json`: the inventory per
// cluster, and the protect list for a registry's retention tooling.
type imagesJSON struct {
	Clusters []shellimage.ClusterImages `json:"clusters"`
	// Protect is every REPOSITORY@DIGEST in use or configured.
	Protect []string `json:"protect"`
	// Unresolved are references with no known digest (a tag no pod
	// runs): they cannot be protected by digest; pin them.
	Unresolved []string `json:"unresolved"`
}

// cmdImages lists the shell images in use and configured, per cluster.
// It exits 1 when a cluster could not be asked: its list is incomplete.
func cmdImages(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (YAML)")
	output := fs.String("output", "table", "table, or json (the protect list for a registry's retention rules)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cfgPath == "" || (*output != "table" && *output != "json") {
		fmt.Fprintln(stderr, "usage: bastion images --config FILE [--output table|json]")
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "bastion: %v\n", err)
		return 1
	}
	b, err := cliBackend(context.Background(), cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "bastion images: %v\n", err)
		return 1
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*cfg.Kube.APITimeout+5*time.Second)
	defer cancel()
	inv := b.Inventory(ctx)
	protect, unresolved := shellimage.ProtectList(inv)

	code := 0
	for _, c := range inv {
		if c.Error != "" {
			fmt.Fprintf(stderr, "bastion images: cluster %s: %s (its live pods are missing from the list)\n", c.Cluster, c.Error)
			code = 1
		}
	}
	for _, u := range unresolved {
		fmt.Fprintf(stderr, "bastion images: %s has no known digest (no pod runs it): pin it by digest so that it can be protected\n", u)
	}
	if *output == "json" {
		if protect == nil {
			protect = []string{}
		}
		if unresolved == nil {
			unresolved = []string{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(imagesJSON{Clusters: inv, Protect: protect, Unresolved: unresolved}); err != nil {
			fmt.Fprintf(stderr, "bastion images: %v\n", err)
			return 1
		}
		return code
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tIMAGE\tDIGEST\tPODS\tCONFIG")
	for _, c := range inv {
		for _, u := range c.Images {
			d, role := u.Digest, u.Config
			if d == "" {
				d = "-"
			}
			if role == "" {
				role = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", c.Cluster, u.Image, d, u.Pods, role)
		}
	}
	if err := tw.Flush(); err != nil {
		return 1
	}
	return code
}

// cliBackend is a kube backend for a one-off command: it talks to the
// clusters but starts no loops. Its warnings (a shell image given by tag)
// go to stderr.
func cliBackend(ctx context.Context, cfg config.Config, stderr io.Writer) (*kube.Backend, error) {
	if cfg.Backend.Type != "kube" {
		return nil, fmt.Errorf("backend.type is %q: shell images belong to the kube backend", cfg.Backend.Type)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	routeClientGoLogs(log)
	return kube.New(ctx, kube.Config{Kube: cfg.Kube, Log: log})
}

// preflight runs `check-config --preflight`: a probe pod for every shell
// image of every cluster, one line each; 1 if any failed.
func preflight(cfg config.Config, stdout, stderr io.Writer) int {
	if cfg.Backend.Type != "kube" {
		fmt.Fprintf(stdout, "pre-flight: nothing to check (backend.type is %s)\n", cfg.Backend.Type)
		return 0
	}
	b, err := cliBackend(context.Background(), cfg, stderr)
	if err != nil {
		fmt.Fprintf(stdout, "pre-flight: %v\n", err)
		return 1
	}
	defer b.Close()
	k := cfg.Kube
	ctx, cancel := context.WithTimeout(context.Background(), k.Preflight.Timeout+3*k.APITimeout+5*time.Second)
	defer cancel()
	results := b.CheckImages(ctx)
	failed := 0
	for _, r := range results {
		fmt.Fprintf(stdout, "pre-flight %s %s: %s\n", r.Cluster, r.Image, r)
		if !r.OK {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(stdout, "pre-flight failed for %d of %d images\n", failed, len(results))
		return 1
	}
	fmt.Fprintf(stdout, "pre-flight ok: %d images\n", len(results))
	return 0
}

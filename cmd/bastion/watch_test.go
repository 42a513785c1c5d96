package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/config"
)

// Issue 11, item 8: a file written beside the config (bastion's own log)
// reloads nothing; a change of a watched file's content reloads once,
// also through a Kubernetes-style ..data symlink swap.
func TestWatchReloadsOnContentChangeOnly(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bastion.yaml")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(cfg, "limits: {}\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 1)
	w, err := watchFiles(ctx, func() []string { return []string{cfg} }, slog.New(slog.NewTextHandler(io.Discard, nil)), changed)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	quiet := func(what string, d time.Duration) {
		t.Helper()
		select {
		case <-changed:
			t.Fatalf("%s: reload signalled", what)
		case <-time.After(d):
		}
	}
	reloaded := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no reload", what)
		}
	}

	logf, err := os.OpenFile(filepath.Join(dir, "bastion.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	stop := time.Now().Add(2 * time.Second)
	for time.Now().Before(stop) {
		_, _ = logf.WriteString("level=INFO msg=\"config reloaded\"\n")
		time.Sleep(50 * time.Millisecond)
	}
	quiet("a log file written in the config's directory", time.Second)

	write(cfg, "limits: {}\n") // same content, new mtime
	quiet("the config rewritten unchanged", time.Second)

	write(cfg, "limits: {max_auth_tries: 3}\n")
	reloaded("the config changed")
	quiet("after the change", time.Second)

	// A Secret-style mount: the file is a symlink through ..data.
	mount := filepath.Join(dir, "mount")
	for _, d := range []string{"v1", "v2"} {
		if err := os.MkdirAll(filepath.Join(mount, d), 0o700); err != nil {
			t.Fatal(err)
		}
		write(filepath.Join(mount, d, "key"), "key "+d+"\n")
	}
	if err := os.Symlink("v1", filepath.Join(mount, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/key", filepath.Join(mount, "key")); err != nil {
		t.Fatal(err)
	}
	w2, err := watchFiles(ctx, func() []string { return []string{filepath.Join(mount, "key")} }, slog.New(slog.NewTextHandler(io.Discard, nil)), changed)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if err := os.Symlink("v2", filepath.Join(mount, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mount, "..data_tmp"), filepath.Join(mount, "..data")); err != nil {
		t.Fatal(err)
	}
	reloaded("the ..data swap")
}

// Issue 11, item 8: pre-flight runs again only when the image
// configuration changed.
func TestImagesChanged(t *testing.T) {
	base := func() config.Config {
		c := config.Default()
		c.Kube.Pod.Image = "reg/shell@sha256:1"
		c.Kube.Clusters = []config.KubeCluster{{Name: "tools", Kubeconfig: "/k"}}
		return c
	}
	for _, tt := range []struct {
		name   string
		mutate func(*config.Config)
		want   bool
	}{
		{"nothing", func(*config.Config) {}, false},
		{"limits only", func(c *config.Config) { c.Limits.MaxAuthTries = 3 }, false},
		{"primary image", func(c *config.Config) { c.Kube.Pod.Image = "reg/shell@sha256:2" }, true},
		{"fallback", func(c *config.Config) { c.Kube.Pod.FallbackImages = []string{"reg/old@sha256:0"} }, true},
		{"cluster override", func(c *config.Config) { c.Kube.Clusters[0].Pod.Image = "reg/x@sha256:3" }, true},
		{"new cluster", func(c *config.Config) {
			c.Kube.Clusters = append(c.Kube.Clusters, config.KubeCluster{Name: "b", Kubeconfig: "/b"})
		}, true},
	} {
		b := base()
		tt.mutate(&b)
		if got := imagesChanged(base(), b); got != tt.want {
			t.Errorf("%s: imagesChanged = %v, want %v", tt.name, got, tt.want)
		}
	}
}

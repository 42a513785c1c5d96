package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bastion-ssh/bastion/config"
)

func TestChooseSFTP(t *testing.T) {
	empty := t.TempDir()
	found := t.TempDir()
	arch := filepath.Join(found, "usr/lib/ssh/sftp-server")
	if err := os.MkdirAll(filepath.Dir(arch), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(arch, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	local := config.Default()
	set := config.Default()
	set.SSH.SFTPServer = "/opt/sftp-server -l INFO"
	kube := config.Default()
	kube.Backend.Type = "kube"
	kubeHelperCfg := kube
	kubeHelperCfg.Kube.Clusters = []config.KubeCluster{{Name: "a"}, {Name: "b", Pod: config.KubePod{HelperImage: "reg/bastion@sha256:1"}}}
	exe, _ := os.Executable()
	for _, c := range []struct {
		name, root string
		cfg        config.Config
		command    string
		builtIn    bool
	}{
		{"configured", empty, set, "/opt/sftp-server -l INFO", false},
		{"found (Arch)", found, local, arch, false},
		{"none: built-in", empty, local, exe + " sftp-server", true},
		{"kube", empty, kube, "/usr/lib/openssh/sftp-server", false},
		{"kube with helper", empty, kubeHelperCfg, kubeSFTPFallback, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(sftpSearchRootEnv, c.root)
			got := chooseSFTP(c.cfg)
			if got.Command != shellQuoteIfPath(c.command) || got.BuiltIn != c.builtIn || !strings.HasPrefix(got.Line, "sftp: ") || strings.Contains(got.Line, "\n") {
				t.Errorf("got %+v, want command %q built-in %v", got, c.command, c.builtIn)
			}
		})
	}
}

// shellQuoteIfPath quotes a bare path as chooseSFTP does.
func shellQuoteIfPath(s string) string {
	if strings.HasSuffix(s, " sftp-server") {
		return shellQuote(strings.TrimSuffix(s, " sftp-server")) + " sftp-server"
	}
	if strings.HasPrefix(s, "/") && !strings.Contains(s, " ") {
		return shellQuote(s)
	}
	return s
}

func TestKubeSFTPFallbackIsShell(t *testing.T) {
	if out, err := exec.Command("/bin/sh", "-n", "-c", kubeSFTPFallback).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/bin/bastion": "/usr/bin/bastion", "/tmp/my dir/bastion": `'/tmp/my dir/bastion'`, "/x/it's": `'/x/it'\''s'`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

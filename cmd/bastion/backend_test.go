package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLinkBecome(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "bin", "bastion")
	link := filepath.Join(dir, "usr-local-bin", "become")
	target := func() string { s, _ := os.Readlink(link); return s }

	if changed, err := linkBecome(link, exe); err != nil || !changed || target() != exe {
		t.Fatalf("no link yet: changed %v, %v, target %q", changed, err, target())
	}
	if changed, err := linkBecome(link, exe); err != nil || changed {
		t.Fatalf("already ours: changed %v, %v", changed, err)
	}
	// An older bastion's link (another path) is repointed.
	newExe := filepath.Join(dir, "new", "bastion-1.2")
	if changed, err := linkBecome(link, newExe); err != nil || !changed || target() != newExe {
		t.Fatalf("older bastion: changed %v, %v, target %q", changed, err, target())
	}
	// Someone else's become is left alone.
	os.Remove(link)
	os.Symlink("/opt/toolforge/become", link)
	if _, err := linkBecome(link, exe); err == nil || !strings.Contains(err.Error(), "not to bastion; leaving it") || target() != "/opt/toolforge/become" {
		t.Fatalf("foreign link: %v, target %q", err, target())
	}
	os.Remove(link)
	os.WriteFile(link, []byte("#!/bin/sh\n"), 0o755)
	if _, err := linkBecome(link, exe); err == nil || !strings.Contains(err.Error(), "is not bastion's link") {
		t.Fatalf("foreign file: %v", err)
	}
}

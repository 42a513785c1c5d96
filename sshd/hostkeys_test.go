package sshd

import (
	"crypto/rsa"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestHostKeyFiles(t *testing.T) {
	dir := t.TempDir()
	paths, err := EnsureHostKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 || filepath.Base(paths[0]) != "ssh_host_ed25519_key" || filepath.Base(paths[1]) != "ssh_host_rsa_key" {
		t.Fatalf("keys %v, want ed25519 and rsa only", paths)
	}
	for _, p := range paths {
		st, _ := os.Stat(p)
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %o", p, st.Mode().Perm())
		}
	}
	keys, err := LoadHostKeys(paths)
	if err != nil || keys.Len() != 2 {
		t.Fatalf("load: %v", err)
	}
	if k := keys.signers[1].PublicKey().(ssh.CryptoPublicKey).CryptoPublicKey().(*rsa.PublicKey); k.N.BitLen() != 3072 {
		t.Errorf("rsa host key has %d bits, want 3072", k.N.BitLen())
	}
	// Created once, reused after: the same key comes back.
	before, _ := os.ReadFile(paths[0])
	if _, err := EnsureHostKeys(dir); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(paths[0])
	if string(before) != string(after) {
		t.Error("host key regenerated")
	}
	// Our own key readable by others is refused; a key owned by another
	// user (a mounted Secret) is not our call.
	os.Chmod(paths[0], 0o640)
	if _, err := LoadHostKeys(paths[:1]); err == nil || !strings.Contains(err.Error(), "too open") {
		t.Errorf("0640 own key: %v", err)
	}
	if os.Getuid() == 0 {
		other := filepath.Join(dir, "other")
		data, _ := os.ReadFile(paths[1])
		os.WriteFile(other, data, 0o440)
		os.Chown(other, 0, 0)
		os.Chown(other, 65532, 65532)
		if _, err := LoadHostKeys([]string{other}); err != nil {
			t.Errorf("0440 key owned by another user: %v", err)
		}
	}
	if _, err := LoadHostKeys([]string{filepath.Join(dir, "missing")}); err == nil {
		t.Error("missing key accepted")
	}
}

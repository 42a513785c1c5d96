package slapd

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Key returns the deterministic ed25519 test key called name (the same
// name always gives the same key). Never trust these keys outside tests.
func Key(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("bastion test key: " + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// PublicKey returns the SSH public half of Key(name).
func PublicKey(name string) ssh.PublicKey {
	pub, err := ssh.NewPublicKey(Key(name).Public())
	if err != nil {
		panic(err) // cannot happen for ed25519
	}
	return pub
}

// AuthorizedKey returns Key(name) as one authorized_keys line, with name
// as the comment and no trailing newline.
func AuthorizedKey(name string) string {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(PublicKey(name))))
	return line + " " + name
}

// Signer returns an ssh.Signer for Key(name).
func Signer(name string) ssh.Signer {
	s, err := ssh.NewSignerFromKey(Key(name))
	if err != nil {
		panic(err)
	}
	return s
}

// WritePrivateKey writes Key(name) in OpenSSH format to dir/name (mode
// 0600, as ssh -i requires) and returns the path.
func WritePrivateKey(t testing.TB, dir, name string) string {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(Key(name), name)
	if err != nil {
		t.Fatalf("marshal test key %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatalf("write test key %s: %v", name, err)
	}
	return path
}

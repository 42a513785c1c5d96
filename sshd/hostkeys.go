package sshd

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/crypto/ssh"
)

// HostKeys is a loaded set of host keys.
type HostKeys struct{ signers []ssh.Signer }

// Len returns the number of keys.
func (h HostKeys) Len() int { return len(h.signers) }

// LoadHostKeys reads OpenSSH private key files. Every file must be
// readable, parse, and not be group- or world-readable.
func LoadHostKeys(paths []string) (HostKeys, error) {
	s, err := loadHostKeys(paths)
	return HostKeys{signers: s}, err
}

func loadHostKeys(paths []string) ([]ssh.Signer, error) {
	if len(paths) == 0 {
		return nil, errors.New("no host key files configured (ssh.host_keys)")
	}
	var signers []ssh.Signer
	var errs []error
	for _, p := range paths {
		s, err := loadHostKey(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		signers = append(signers, s)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return signers, nil
}

func loadHostKey(path string) (ssh.Signer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", path, err)
	}
	// Like OpenSSH, refuse a key we own that others can read; a key owned
	// by someone else (root, in a Kubernetes Secret mounted 0440 for the
	// pod's fsGroup) is the owner's business.
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) == os.Getuid() && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("host key %s: permissions %04o are too open; run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", path, err)
	}
	s, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", path, err)
	}
	return restrictRSA(s)
}

// restrictRSA makes RSA host keys sign only with rsa-sha2-512/256, never
// SHA-1 ssh-rsa.
func restrictRSA(s ssh.Signer) (ssh.Signer, error) {
	if s.PublicKey().Type() != ssh.KeyAlgoRSA {
		return s, nil
	}
	as, ok := s.(ssh.AlgorithmSigner)
	if !ok {
		return nil, errors.New("rsa host key cannot choose its signature algorithm")
	}
	return ssh.NewSignerWithAlgorithms(as, []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256})
}

// EnsureHostKeys creates the host keys in dir if they do not exist, and
// returns their paths: ed25519, which every current client prefers, and
// RSA (3072 bits, signing with rsa-sha2-256/512) for the few without
// ed25519. No ECDSA: the NIST curves are what ssh-audit fails, and no
// client needs them. An ECDSA key left by an older version is not loaded.
func EnsureHostKeys(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create host key directory: %w", err)
	}
	kinds := []struct {
		name string
		gen  func() (any, error)
	}{
		{"ssh_host_ed25519_key", func() (any, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err }},
		{"ssh_host_rsa_key", func() (any, error) { return rsa.GenerateKey(rand.Reader, 3072) }},
	}
	var paths []string
	for _, k := range kinds {
		p := filepath.Join(dir, k.name)
		paths = append(paths, p)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		key, err := k.gen()
		if err != nil {
			return nil, fmt.Errorf("generate %s: %w", k.name, err)
		}
		block, err := ssh.MarshalPrivateKey(key, "bastion host key")
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", k.name, err)
		}
		if err := writeFileAtomic(p, pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, err
		}
		signer, err := ssh.NewSignerFromKey(key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.name, err)
		}
		pub := ssh.MarshalAuthorizedKey(signer.PublicKey())
		if err := writeFileAtomic(p+".pub", pub, 0o644); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// writeFileAtomic writes data to a temp file in the same directory and
// renames it into place, so a crash never leaves a half-written key.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(perm)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return nil
}

package integration

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHostKeyRotation replaces the host key the way a Kubernetes Secret
// update does (a new timestamped directory and an atomic "..data" symlink
// swap) under a running server with a client connected: new connections
// get the new key, the live session keeps working, and a broken key is
// rejected while the old one stays.
func TestHostKeyRotation(t *testing.T) {
	needTools(t, "ssh", "ssh-keygen", "ssh-keyscan")
	t.Parallel()
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.MkdirAll(secret, 0o700)
	mkVersion := func(name string) string {
		v := filepath.Join(secret, name)
		os.MkdirAll(v, 0o700)
		userKey(t, v, "ssh_host_ed25519_key")
		os.Chmod(filepath.Join(v, "ssh_host_ed25519_key"), 0o600)
		return v
	}
	swap := func(version string) {
		tmp := filepath.Join(secret, "..data_tmp")
		os.Remove(tmp)
		if err := os.Symlink(filepath.Base(version), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(secret, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	v1 := mkVersion("..2026_11_24_v1")
	swap(v1)
	keyPath := filepath.Join(secret, "ssh_host_ed25519_key")
	os.Symlink("..data/ssh_host_ed25519_key", keyPath)

	s := startDev(t, "ssh:\n  host_keys: ["+keyPath+"]\n")
	scan := func() string {
		out, _ := exec.Command("ssh-keyscan", "-t", "ed25519", "-p", s.port, "127.0.0.1").Output()
		return string(out)
	}
	pub := func(v string) string {
		b, _ := os.ReadFile(filepath.Join(v, "ssh_host_ed25519_key.pub"))
		return strings.Fields(string(b))[1]
	}
	if !strings.Contains(scan(), pub(v1)) {
		t.Fatalf("server does not present the first key")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", append(s.sshOpts(), "-p", s.port, s.user+"@127.0.0.1", "cat")...)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	roundTrip := func(msg string) {
		t.Helper()
		io.WriteString(in, msg+"\n")
		buf := make([]byte, len(msg)+1)
		if _, err := io.ReadFull(out, buf); err != nil || string(buf) != msg+"\n" {
			t.Fatalf("live session: %q %v", buf, err)
		}
	}
	roundTrip("before rotation")

	v2 := mkVersion("..2026_11_24_v2")
	swap(v2)
	waitFor(t, "the new host key", 10*time.Second, func() bool { return strings.Contains(scan(), pub(v2)) })
	roundTrip("after rotation")

	// A broken key file is rejected; the server keeps the good one.
	v3 := filepath.Join(secret, "..2026_11_24_v3")
	os.MkdirAll(v3, 0o700)
	os.WriteFile(filepath.Join(v3, "ssh_host_ed25519_key"), []byte("garbage"), 0o600)
	swap(v3)
	waitFor(t, "the rejection", 10*time.Second, func() bool { return strings.Contains(s.logs(), "reload rejected") })
	if !strings.Contains(scan(), pub(v2)) {
		t.Fatalf("after a bad key the server no longer presents the good one")
	}
	roundTrip("after bad rotation")
	in.Close()
}

package sftpserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The test binary doubles as the server: sftp -D runs it with this
// variable set.
const serveEnv = "BASTION_SFTPSERVER_TEST_SERVE"

func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) != "" {
		os.Exit(Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// sftpBatch runs OpenSSH's sftp client against this package's server
// (sftp -D: no ssh in between) with the batch commands and server flags.
func sftpBatch(t *testing.T, dir, batch string, serverArgs ...string) (string, error) {
	t.Helper()
	return sftpClient(t, dir, batch, nil, serverArgs...)
}

// sftpClient is sftpBatch with arguments for the client too.
func sftpClient(t *testing.T, dir, batch string, clientArgs []string, serverArgs ...string) (string, error) {
	t.Helper()
	sftp, err := exec.LookPath("sftp")
	if err != nil {
		t.Skip("OpenSSH's sftp client is not installed (apt-get install openssh-client)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	server := strings.Join(append([]string{exe}, serverArgs...), " ")
	cmd := exec.Command(sftp, append(clientArgs, "-b", "-", "-D", server)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), serveEnv+"=1")
	cmd.Stdin = strings.NewReader(batch)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestRoundTripWithOpenSSHClient(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := make([]byte, 5<<20+123) // not a multiple of any packet size
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	remote := filepath.Join(dir, "remote")
	if err := os.Mkdir(remote, 0o700); err != nil {
		t.Fatal(err)
	}
	batch := "cd " + remote + "\nput src.bin up.bin\nget up.bin down.bin\nrename up.bin moved.bin\nmkdir sub\nls -l\nrm moved.bin\nrmdir sub\n"
	out, err := sftpBatch(t, dir, batch)
	if err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "down.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip differs (read err %v, %d bytes of %d)\n%s", err, len(got), len(data), out)
	}
	if !strings.Contains(out, "moved.bin") || !strings.Contains(out, "sub") {
		t.Errorf("ls missed the renamed file or the directory:\n%s", out)
	}
	if left, _ := os.ReadDir(remote); len(left) != 0 {
		t.Errorf("rm/rmdir left %v", left)
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := sftpBatch(t, dir, "put "+filepath.Join(dir, "f")+" "+filepath.Join(dir, "g")+"\n", "-R")
	if err == nil {
		t.Fatalf("put succeeded on a read-only server:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "g")); err == nil {
		t.Fatal("read-only server created a file")
	}
}

func TestStartDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := filepath.Join(dir, "start")
	if err := os.Mkdir(start, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(start, "marker"), []byte("here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := sftpBatch(t, dir, "pwd\nget marker got\n", "-d", start)
	if err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "got")); string(b) != "here\n" || !strings.Contains(out, start) {
		t.Fatalf("relative paths did not start at -d %s: got %q\n%s", start, b, out)
	}
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-u", "99"}, {"-d", "/nonexistent/dir"}, {"-x"}, {"extra"}} {
		var stderr bytes.Buffer
		code := Main(context.Background(), args, strings.NewReader(""), &bytes.Buffer{}, &stderr)
		if code == 0 || !strings.HasPrefix(stderr.String(), "sftp-server: ") {
			t.Errorf("%v: exit %d, stderr %q; want a one-line refusal", args, code, stderr.String())
		}
	}
}

func TestExpandDir(t *testing.T) {
	t.Setenv("HOME", "/home/alice")
	t.Setenv("USER", "alice")
	for in, want := range map[string]string{
		"/srv/%u": "/srv/alice", "%d/www": "/home/alice/www", "100%%": "100%", "/plain": "/plain", "end%": "end%",
	} {
		if got := expandDir(in); got != want {
			t.Errorf("expandDir(%q) = %q, want %q", in, got, want)
		}
	}
}

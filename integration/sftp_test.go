package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuiltinSFTP: on a machine without OpenSSH's sftp-server (the search
// root is an empty directory), bastion dev says so in one line and serves
// scp (SFTP mode) and sftp with its own server, byte for byte.
func TestBuiltinSFTP(t *testing.T) {
	needTools(t, "ssh", "scp", "sftp")
	t.Parallel()
	s := startDevEnv(t, []string{"BASTION_SFTP_SEARCH_ROOT=" + t.TempDir()}, "")
	s.mu.Lock()
	startup := s.stdout.String()
	s.mu.Unlock()
	if !strings.Contains(startup, "sftp: bastion's built-in SFTP server (no OpenSSH sftp-server found; to use OpenSSH's, install openssh-sftp-server or set ssh.sftp_server)") {
		t.Errorf("start-up does not say which sftp server it uses:\n%s", startup)
	}

	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	size := int64(64<<20 + 4321)
	if testing.Short() {
		size = 4<<20 + 4321
	}
	want, remote := transferFiles(t, dir, src, size)
	opts := s.sshOpts()
	target := s.user + "@127.0.0.1:"

	t.Run("scp", func(t *testing.T) {
		for _, argv := range [][]string{
			append(append([]string{"-s"}, opts...), "-P", s.port, src, target+remote+"/scp"), // -s: SFTP protocol, whatever the client's default
			append(append([]string{"-s"}, opts...), "-P", s.port, target+remote+"/scp", dir+"/scp.back"),
		} {
			if out, err := exec.Command("scp", argv...).CombinedOutput(); err != nil {
				t.Fatalf("scp %v: %v\n%s", argv, err, out)
			}
		}
		for _, p := range []string{remote + "/scp", dir + "/scp.back"} {
			if sha(t, p) != want {
				t.Errorf("%s differs from the source", p)
			}
		}
	})
	t.Run("sftp", func(t *testing.T) {
		batch := fmt.Sprintf("put %s %s/sftp\nget %s/sftp %s/sftp.back\nrename %s/sftp %s/moved\nls %s\n", src, remote, remote, dir, remote, remote, remote)
		argv := append(append([]string{"-b", "-"}, opts...), "-P", s.port, s.user+"@127.0.0.1")
		cmd := exec.Command("sftp", argv...)
		cmd.Stdin = strings.NewReader(batch)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sftp: %v\n%s", err, out)
		}
		for _, p := range []string{remote + "/moved", dir + "/sftp.back"} {
			if sha(t, p) != want {
				t.Errorf("%s differs from the source", p)
			}
		}
	})
	// The built-in server runs as a process of the backend (the bastion
	// binary's sftp-server command), not inside the bastion process.
	if !strings.Contains(s.logs(), "sftp-server\"") && !strings.Contains(s.logs(), " sftp-server") {
		t.Errorf("no built-in sftp-server session in the log:\n%s", s.logs())
	}
}

// TestSFTPServerFound: OpenSSH's sftp-server in one of the usual places
// (Fedora's here) is what bastion dev uses, and says so.
func TestSFTPServerFound(t *testing.T) {
	needTools(t, "ssh", "sftp")
	real := "/usr/lib/openssh/sftp-server"
	if _, err := os.Stat(real); err != nil {
		t.Fatalf("sftp-server missing (apt-get install openssh-sftp-server): %v", err)
	}
	t.Parallel()
	root := t.TempDir()
	fedora := filepath.Join(root, "usr/libexec/openssh/sftp-server")
	if err := os.MkdirAll(filepath.Dir(fedora), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, fedora); err != nil {
		t.Fatal(err)
	}
	s := startDevEnv(t, []string{"BASTION_SFTP_SEARCH_ROOT=" + root}, "")
	s.mu.Lock()
	startup := s.stdout.String()
	s.mu.Unlock()
	if !strings.Contains(startup, "sftp: OpenSSH's sftp-server ("+fedora+")\n") {
		t.Errorf("start-up does not name the sftp-server it found:\n%s", startup)
	}
	argv := append(append([]string{"-b", "-"}, s.sshOpts()...), "-P", s.port, s.user+"@127.0.0.1")
	cmd := exec.Command("sftp", argv...)
	cmd.Stdin = strings.NewReader("pwd\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	if !strings.Contains(s.logs(), fedora) {
		t.Errorf("the sftp session did not run %s:\n%s", fedora, s.logs())
	}
}

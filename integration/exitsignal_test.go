package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// exitSignalScript prints, per command, what asyncssh saw: the exit
// status and the exit-signal request (name, core dumped).
const exitSignalScript = `
import asyncio, asyncssh, sys
async def main(port, user, key, cmds):
    async with asyncssh.connect('127.0.0.1', port=int(port), username=user, client_keys=[key], known_hosts=None) as c:
        for cmd in cmds:
            r = await c.run(cmd, check=False)
            sig = r.exit_signal[:2] if r.exit_signal else None
            print(repr(cmd), r.exit_status, sig)
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
`

// TestExitSignalMatchesOpenSSH runs the same commands against OpenSSH's
// sshd and bastion dev and compares the exit-status and exit-signal
// requests the client receives (asyncssh reports both).
func TestExitSignalMatchesOpenSSH(t *testing.T) {
	needTools(t, "ssh-keygen", "/usr/sbin/sshd", "/usr/bin/python3")
	if os.Geteuid() != 0 {
		t.Skip("OpenSSH's sshd needs root to run sessions for a user")
	}
	if out, err := exec.Command("/usr/bin/python3", "-c", "import asyncssh").CombinedOutput(); err != nil {
		t.Skipf("python3-asyncssh is not installed (scripts/test installs it): %v\n%s", err, out)
	}
	t.Parallel()
	s := startDev(t, "")

	// OpenSSH's sshd on a free port, for the same user and key.
	dir := s.dir
	hostKey := filepath.Join(dir, "sshd_host_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	port := freePort(t)
	cfg := filepath.Join(dir, "sshd_config")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`ListenAddress 127.0.0.1:%s
HostKey %s
PidFile none
AuthorizedKeysFile %s.pub
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
`, port, hostKey, s.key)), 0o600)
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sshd := exec.CommandContext(ctx, "/usr/sbin/sshd", "-D", "-e", "-f", cfg)
	var sshdLog bytes.Buffer
	sshd.Stderr = &sshdLog
	if err := sshd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = sshd.Wait() })
	waitFor(t, "sshd listening", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	cmds := []string{"kill -TERM $$", "kill -KILL $$", "kill -USR1 $$", "kill -VTALRM $$", "kill -BUS $$", "kill -RTMIN $$", "exit 143", "true"}
	script := filepath.Join(dir, "exitsignal.py")
	os.WriteFile(script, []byte(exitSignalScript), 0o600)
	ask := func(port string) string {
		out, err := exec.Command("/usr/bin/python3", append([]string{"-W", "ignore", script, port, s.user, s.key}, cmds...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("asyncssh against port %s: %v\n%s\nsshd log:\n%s", port, err, out, sshdLog.String())
		}
		return string(out)
	}
	want, got := ask(port), ask(s.port)
	if got != want {
		t.Errorf("exit requests differ from OpenSSH's\nOpenSSH:\n%s\nbastion:\n%s", want, got)
	}
	if !strings.Contains(want, "'kill -VTALRM $$' -1 ('SIG@openssh.com', False)") {
		t.Errorf("OpenSSH no longer names other signals SIG@openssh.com; check wireSignal:\n%s", want)
	}
}

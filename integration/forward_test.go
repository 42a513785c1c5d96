package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// sshWith runs ssh as runAs does, with extra environment variables for
// the client (SSH_AUTH_SOCK).
func (s *server) sshWith(t testing.TB, env []string, key string, args ...string) (string, string, int) {
	t.Helper()
	return s.sshAs(t, env, key, s.user, args...)
}

// sshAs is sshWith with another login name.
func (s *server) sshAs(t testing.TB, env []string, key, login string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var opts, remote []string
	for i, a := range args {
		if a == "--" {
			remote = args[i+1:]
			break
		}
		opts = append(opts, a)
	}
	all := append(opts, s.sshOptsKey(key)...)
	all = append(all, "-p", s.port, login+"@127.0.0.1")
	all = append(all, remote...)
	cmd := exec.CommandContext(ctx, "ssh", all...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("ssh: %v", err)
	}
	return out.String(), errb.String(), code
}

// startAgent runs a real ssh-agent on a socket of its own holding a fresh
// key, and returns the socket and the key's fingerprint.
func startAgent(t *testing.T) (sock, fingerprint string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = filepath.Join(dir, "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	waitFor(t, "ssh-agent's socket", 10*time.Second, func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	key := userKey(t, dir, "forwarded")
	add := exec.Command("ssh-add", key)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}
	out, err := exec.Command("ssh-keygen", "-lf", key+".pub").Output()
	if err != nil {
		t.Fatal(err)
	}
	return sock, strings.Fields(string(out))[1]
}

// TestAgentForwarding: ssh -A with a real ssh-agent; in the session,
// ssh-add -l lists the agent's key through a socket private to the
// account. A key with no-agent-forwarding gets no socket.
func TestAgentForwarding(t *testing.T) {
	needTools(t, "ssh", "ssh-keygen", "ssh-agent", "ssh-add")
	t.Parallel()
	dir := t.TempDir()
	plain := userKey(t, dir, "id_ed25519")
	noAgent := userKey(t, dir, "noagent")
	s := startTrustDev(t, dir, pubKey(t, plain)+"\nno-agent-forwarding "+pubKey(t, noAgent)+"\n", "")
	sock, fp := startAgent(t)
	env := []string{"SSH_AUTH_SOCK=" + sock}

	out, errOut, code := s.sshWith(t, env, plain, "-A", "--",
		`stat -c '%a' "$SSH_AUTH_SOCK" "$(dirname "$SSH_AUTH_SOCK")"; ssh-add -l`)
	if code != 0 || !strings.HasPrefix(out, "600\n700\n") || !strings.Contains(out, fp) {
		t.Fatalf("ssh -A: code %d, stdout %q, stderr %q; want a 0600 socket in a 0700 directory and %s listed\nlog:\n%s", code, out, errOut, fp, s.logs())
	}
	// A terminal session has it too.
	out, errOut, code = s.sshWith(t, env, plain, "-A", "-tt", "--", `ssh-add -l; exit`)
	if code != 0 || !strings.Contains(out, fp) {
		t.Errorf("ssh -A -tt: code %d, stdout %q, stderr %q", code, out, errOut)
	}

	out, errOut, code = s.sshWith(t, env, noAgent, "-A", "-o", "LogLevel=INFO", "--", `echo "[$SSH_AUTH_SOCK]"`)
	if code != 0 || out != "[]\n" {
		t.Errorf("no-agent-forwarding: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	if !strings.Contains(s.logs(), "agent forwarding refused") || !strings.Contains(s.logs(), "no-agent-forwarding") {
		t.Errorf("no log line for the refusal:\n%s", s.logs())
	}
}

// TestRemoteForward: ssh -R 0: reports the allocated port, a process in
// the session reaches the client's listener through it (bash /dev/tcp),
// a fixed port works, ssh -O cancel closes it, and no-port-forwarding
// refuses.
func TestRemoteForward(t *testing.T) {
	needTools(t, "ssh", "ssh-keygen", "bash")
	t.Parallel()
	dir := t.TempDir()
	plain := userKey(t, dir, "id_ed25519")
	noFwd := userKey(t, dir, "nofwd")
	s := startTrustDev(t, dir, pubKey(t, plain)+"\nno-port-forwarding "+pubKey(t, noFwd)+"\n", "")
	echo := sessiontest.EchoServer(t) // on the client's side
	ctl, port, _ := s.remoteMaster(t, plain, s.user, echo, 20*time.Second)
	mux := func(args ...string) (string, string, int) {
		return s.sshWith(t, nil, plain, append([]string{"-S", ctl}, args...)...)
	}
	connect := func(port string) string {
		return `exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/` + port + ` && echo through-the-tunnel >&3 && head -n1 <&3'`
	}
	out, errOut, code := mux("--", connect(port))
	if code != 0 || out != "through-the-tunnel\n" {
		t.Fatalf("to the allocated port %s in the session: code %d, stdout %q, stderr %q\nlog:\n%s", port, code, out, errOut, s.logs())
	}

	// A fixed port, added to the running connection, then cancelled.
	fixed := freePort(t)
	if out, errOut, code := mux("-O", "forward", "-R", fixed+":"+echo, "--"); code != 0 {
		t.Fatalf("ssh -O forward -R %s: code %d %q %q", fixed, code, out, errOut)
	}
	out, errOut, code = mux("--", connect(fixed))
	if code != 0 || out != "through-the-tunnel\n" {
		t.Fatalf("to the fixed port %s: code %d, stdout %q, stderr %q", fixed, code, out, errOut)
	}
	if out, errOut, code := mux("-O", "cancel", "-R", fixed+":"+echo, "--"); code != 0 {
		t.Fatalf("ssh -O cancel -R %s: code %d %q %q", fixed, code, out, errOut)
	}
	waitFor(t, "the cancelled port to close", 10*time.Second, func() bool {
		_, _, code := mux("--", connect(fixed))
		return code != 0
	})
	if !strings.Contains(s.logs(), "remote forward cancelled") {
		t.Errorf("no log line for the cancel:\n%s", s.logs())
	}

	// no-port-forwarding: refused, and ExitOnForwardFailure makes it fatal.
	out, errOut, code = s.sshWith(t, nil, noFwd, "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=INFO", "-R", "0:"+echo, "--", "echo ran")
	if code != 255 || !strings.Contains(errOut, "remote port forwarding failed") {
		t.Errorf("no-port-forwarding: code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// remoteMaster starts an OpenSSH ControlMaster (-M -N) as login with
// `-R 0:echo` and returns its control socket and the port ssh reported
// allocating ("Allocated port N"), waiting up to wait for it, and stop,
// which ends the master and waits for it; the master and its socket's
// directory go with the test in any case.
func (s *server) remoteMaster(t *testing.T, key, login, echo string, wait time.Duration) (ctl, port string, stop func()) {
	t.Helper()
	ctlDir, err := os.MkdirTemp("", "cm") // short: a socket path has 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(ctlDir) })
	ctl = filepath.Join(ctlDir, "c")
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"-o", "LogLevel=INFO", "-M", "-S", ctl, "-N", "-R", "0:" + echo}, s.sshOptsKey(key)...)
	args = append(args, "-p", s.port, login+"@127.0.0.1")
	master := exec.CommandContext(ctx, "ssh", args...)
	var mu sync.Mutex
	var stderr bytes.Buffer
	master.Stderr = &lockedWriter{mu: &mu, w: &stderr}
	if err := master.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	stop = sync.OnceFunc(func() { cancel(); _ = master.Wait() })
	t.Cleanup(stop)
	allocated := regexp.MustCompile(`Allocated port (\d+) for remote forward`)
	waitFor(t, `ssh's "Allocated port N"`, wait, func() bool {
		mu.Lock()
		defer mu.Unlock()
		if m := allocated.FindStringSubmatch(stderr.String()); m != nil {
			port = m[1]
			return true
		}
		return false
	})
	waitFor(t, "the control socket", 10*time.Second, func() bool {
		_, err := os.Stat(ctl)
		return err == nil
	})
	return ctl, port, stop
}

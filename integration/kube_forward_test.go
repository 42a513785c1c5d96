package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// TestKubeAgentAndRemoteForwarding drives the real OpenSSH client against
// the kube backend on the test cluster, with bastion-helper in the pods
// (kube.pod.helper_image): ssh -A with a real ssh-agent lists its key in
// the pod through a private socket; ssh -R 0: reports the allocated port
// and a process in the pod reaches the client's listener on the pod's
// loopback; a fixed -R port is added and cancelled with ssh -O.
func TestKubeAgentAndRemoteForwarding(t *testing.T) {
	needTools(t, "ssh-agent", "ssh-add")
	w := startKubeWorld(t, kubeOptions{podKeys: "    helper_image: " + kubetest.ShellImage + "\n"})
	s := w.bast
	key := w.key(t, "alice-1")

	sock, fp := startAgent(t)
	env := []string{"SSH_AUTH_SOCK=" + sock}
	out, errOut, code := s.sshAs(t, env, key, "alice", "-A", "--",
		`stat -c '%a %U' "$SSH_AUTH_SOCK" "$(dirname "$SSH_AUTH_SOCK")"; ssh-add -l; cat /proc/sys/kernel/hostname`)
	if code != 0 || !strings.HasPrefix(out, "600 alice\n700 alice\n") || !strings.Contains(out, fp) || !strings.Contains(out, "shell-alice") {
		t.Fatalf("ssh -A in the pod: code %d, stdout %q, stderr %q; want a 0600 socket of alice's in a 0700 directory listing %s", code, out, errOut, fp)
	}

	echo := sessiontest.EchoServer(t) // on the client's side
	ctl, port, stopMaster := s.remoteMaster(t, key, "alice", echo, 60*time.Second)
	mux := func(args ...string) (string, string, int) {
		return s.sshAs(t, nil, key, "alice", append([]string{"-S", ctl}, args...)...)
	}
	connect := func(port string) string {
		return `exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/` + port + ` && echo through-the-tunnel >&3 && head -n1 <&3'`
	}
	out, errOut, code = mux("--", connect(port))
	if code != 0 || out != "through-the-tunnel\n" {
		t.Fatalf("to the allocated port %s in the pod: code %d, stdout %q, stderr %q", port, code, out, errOut)
	}
	fixed := freePort(t)
	if out, errOut, code := mux("-O", "forward", "-R", fixed+":"+echo, "--"); code != 0 {
		t.Fatalf("ssh -O forward -R %s: code %d %q %q", fixed, code, out, errOut)
	}
	out, errOut, code = mux("--", connect(fixed))
	if code != 0 || out != "through-the-tunnel\n" {
		t.Fatalf("to the fixed port %s in the pod: code %d, stdout %q, stderr %q", fixed, code, out, errOut)
	}
	if out, errOut, code := mux("-O", "cancel", "-R", fixed+":"+echo, "--"); code != 0 {
		t.Fatalf("ssh -O cancel -R %s: code %d %q %q", fixed, code, out, errOut)
	}
	waitFor(t, "the cancelled port to close in the pod", 20*time.Second, func() bool {
		_, _, code := mux("--", connect(fixed))
		return code != 0
	})
	// The bastion's own loopback was never used: nothing listens there.
	if ok, _ := dialEcho("127.0.0.1:" + port); ok {
		t.Errorf("the allocated port %s answers on the bastion's host, not only in the pod", port)
	}
	// With the connection gone, no relay is left running in the pod.
	stopMaster()
	waitFor(t, "the relays in the pod to end", 30*time.Second, func() bool {
		out, _, _ := w.ssh(t, s, "alice", "alice-1", "", "--", `for p in /proc/[0-9]*; do tr '\0' ' ' <$p/cmdline 2>/dev/null; echo; done | grep -c '^/.bastion/bastion-helper relay' || true`)
		return strings.TrimSpace(out) == "0"
	})
}

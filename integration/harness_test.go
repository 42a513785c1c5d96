package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	var err error
	binDir, err = os.MkdirTemp("", "bastion-it-")
	if err == nil {
		// Sessions of other uids run the binary too (become typed in a
		// shell, through /usr/local/bin/become).
		err = os.Chmod(binDir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// needTools skips under -short and fails when a required client is missing.
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (./scripts/test installs what the tests need; by hand: apt-get install openssh-client openssh-server openssh-sftp-server rsync): %v", tool, err)
		}
	}
}

// bastionBinary builds cmd/bastion once per test run.
func bastionBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binPath = filepath.Join(binDir, "bastion")
		cmd := exec.Command("go", "build", "-o", binPath, "../cmd/bastion")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// userKey makes an ed25519 key pair with ssh-keygen and returns the
// private key path (the public key is path+".pub").
func userKey(t testing.TB, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", p).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return p
}

// server is a running bastion process.
type server struct {
	t      testing.TB
	cmd    *exec.Cmd
	addr   string
	port   string
	user   string
	key    string
	dir    string
	mu     sync.Mutex
	logBuf bytes.Buffer
	stdout bytes.Buffer
	done   chan struct{}
	exit   error
}

var readyRE = regexp.MustCompile(`ssh -p (\d+) (\S+)@(\S+)`)

// startDev starts `bastion dev` on a free port with a fresh state dir and
// key. configYAML, if not empty, is passed with --config.
func startDev(t testing.TB, configYAML string, extraArgs ...string) *server {
	t.Helper()
	return startDevCmd(t, configYAML, nil, extraArgs...)
}

// startDevCmd is startDev with a hook to prepare the command (extra
// files, environment) before it starts.
func startDevCmd(t testing.TB, configYAML string, prepare func(*exec.Cmd), extraArgs ...string) *server {
	t.Helper()
	return startDevEnv(t, nil, configYAML, extraArgs...)
}

// startDevEnv is startDev with extra environment variables (NAME=value).
func startDevEnv(t testing.TB, env []string, configYAML string, extraArgs ...string) *server {
	t.Helper()
	dir := t.TempDir()
	key := userKey(t, dir, "id_ed25519")
	args := []string{"dev", "--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "state"), "--authorized-keys", key + ".pub"}
	if configYAML != "" {
		cfg := filepath.Join(dir, "bastion.yaml")
		if err := os.WriteFile(cfg, []byte(configYAML), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", cfg)
	}
	args = append(args, extraArgs...)
	return startBastionEnv(t, env, dir, key, args...)
}

// startBastion runs the bastion binary with args and waits until it
// prints its "Log in with" line.
func startBastion(t testing.TB, dir, key string, args ...string) *server {
	t.Helper()
	return startBastionEnv(t, nil, dir, key, args...)
}

// startBastionEnv is startBastion with extra environment variables.
func startBastionEnv(t testing.TB, env []string, dir, key string, args ...string) *server {
	t.Helper()
	s := &server{t: t, key: key, dir: dir, done: make(chan struct{})}
	s.cmd = exec.Command(bastionBinary(t), args...)
	if env != nil {
		s.cmd.Env = append(os.Environ(), env...)
	}
	s.cmd.Stderr = &lockedWriter{mu: &s.mu, w: &s.logBuf}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.stdout.WriteString(line + "\n")
			s.mu.Unlock()
			if m := readyRE.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m:
				default:
				}
			}
		}
		s.exit = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() { s.stop() })
	select {
	case m := <-ready:
		s.port, s.user = m[1], m[2]
		s.addr = "127.0.0.1:" + s.port
	case <-s.done:
		t.Fatalf("bastion exited before it was ready: %v\nlog:\n%s", s.exit, s.logs())
	case <-time.After(20 * time.Second):
		t.Fatalf("bastion not ready after 20s\nlog:\n%s", s.logs())
	}
	return s
}

func (s *server) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logBuf.String()
}

// stop sends SIGTERM and waits; a server that hangs is killed and the
// test fails.
func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(40 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("bastion did not stop within 40s of SIGTERM\nlog:\n%s", s.logs())
	}
}

// sshOpts are the client options every test uses.
func (s *server) sshOpts() []string { return s.sshOptsKey(s.key) }

func (s *server) sshOptsKey(key string) []string {
	return []string{
		"-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
	}
}

// run runs ssh with the remote command and returns stdout, stderr and the
// exit code.
func (s *server) run(t testing.TB, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return s.runAs(t, s.key, s.user, stdin, args...)
}

// runAs is run with another key and login name.
func (s *server) runAs(t testing.TB, key, user, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var clean []string
	remoteAt := -1
	for i, a := range args {
		if a == "--" {
			remoteAt = i
			break
		}
		clean = append(clean, a)
	}
	// ssh keeps the first value of an option: the test's own come first.
	all := append(clean, s.sshOptsKey(key)...)
	all = append(all, "-p", s.port, user+"@127.0.0.1")
	if remoteAt >= 0 {
		all = append(all, args[remoteAt+1:]...)
	}
	cmd := exec.CommandContext(ctx, "ssh", all...)
	cmd.Stdin = strings.NewReader(stdin)
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

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// waitFor polls cond (for external state only, e.g. a log line from a
// process) until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// dialEcho sends a line to addr and reports whether it came back.
func dialEcho(addr string) (bool, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("x\n")); err != nil {
		return false, err
	}
	b := make([]byte, 2)
	if _, err := io.ReadFull(c, b); err != nil {
		return false, err
	}
	return string(b) == "x\n", nil
}

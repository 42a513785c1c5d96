package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// server is one of the two servers under test, running as a child of the
// bench in its own process group.
type server struct {
	name  string // "OpenSSH", "bastion"
	alias string // Host in the generated ssh_config
	port  int
	flag  string // the flag that sets port
	args  []string
	env   []string

	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	banner  string
}

func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// start runs the server and waits until it answers with an SSH banner.
func (s *server) start(ctx context.Context) error {
	if err := checkPort(s.name, s.port, s.flag); err != nil {
		return err
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "---- %s start %s\n", time.Now().Format(time.RFC3339), strings.Join(s.args, " "))
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), s.env...)
	// Own process group; killed with the bench if the bench dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	logf.Close()
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()

	deadline := time.Now().Add(15 * time.Second)
	for {
		if !s.running() {
			return fmt.Errorf("%s exited at start (%v); its log %s ends with:\n%s", s.name, s.waitErr, s.logPath, tail(s.logPath, 15))
		}
		if banner, err := readBanner(s.addr()); err == nil {
			s.banner = banner
			return nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return fmt.Errorf("%s did not answer on %s within 15s; its log %s ends with:\n%s", s.name, s.addr(), s.logPath, tail(s.logPath, 15))
		}
		select {
		case <-ctx.Done():
			s.stop()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func readBanner(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return "", fmt.Errorf("not an SSH server: %q", line)
	}
	return strings.TrimSpace(line), nil
}

// stop ends the server and everything it started: sshd leaves its
// per-connection processes running when the listener exits, so the
// whole tree is collected first and killed after.
func (s *server) stop() {
	if !s.running() {
		return
	}
	tree := descendants(s.pid())
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-s.pid(), syscall.SIGKILL)
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	killProcs(tree)
}

// restart gives a fresh server process (used before the memory case, so
// that earlier cases' heap does not hide or inflate growth).
func (s *server) restart(ctx context.Context) error {
	s.stop()
	waitPortFree(s.port, 5*time.Second)
	return s.start(ctx)
}

func waitPortFree(port int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if checkPort("", port, "") == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpuSeconds is the CPU time the server used so far. For sshd this
// includes the per-connection processes that have exited and been
// waited for (cutime/cstime of the listener).
func (s *server) cpuSeconds() float64 {
	st, ok := readStat(s.pid())
	if !ok {
		return 0
	}
	return float64(st.cpuTicks+st.childCPU) / clockTicks
}

// settle waits until the server has no per-connection processes left
// (sshd) so that their CPU time has been accounted to the listener.
func (s *server) settle(max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		n := 0
		for _, p := range descendants(s.pid()) {
			if p.comm == "sshd" {
				n++
			}
		}
		if n == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
}

// serverMem is the memory of the server's own processes: for sshd the
// listener and every sshd process below it (not the users' shells), for
// bastion its single process.
type serverMem struct {
	RSSKiB, PSSKiB int64
	Procs          int
	Threads        int
}

func (s *server) memory() serverMem {
	var m serverMem
	add := func(pid int) {
		if mm, ok := readMem(pid); ok {
			m.RSSKiB += mm.RSS
			m.PSSKiB += mm.PSS
			m.Procs++
			m.Threads += threads(pid)
		}
	}
	add(s.pid())
	for _, p := range descendants(s.pid()) {
		if p.comm == "sshd" || p.comm == "bastion" {
			add(p.pid)
		}
	}
	return m
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "  (no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// setup writes the keys and the configs of both servers and the client.
func (b *bench) setup() error {
	dir := b.dir
	// One user key and one host key, shared by both servers.
	_, userPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	b.keyPath = filepath.Join(dir, "id_ed25519")
	b.hostKeyPath = filepath.Join(dir, "ssh_host_ed25519_key")
	for _, k := range []struct {
		path string
		key  ed25519.PrivateKey
	}{{b.keyPath, userPriv}, {b.hostKeyPath, hostPriv}} {
		block, err := ssh.MarshalPrivateKey(k.key, "bench")
		if err != nil {
			return err
		}
		if err := os.WriteFile(k.path, pem.EncodeToMemory(block), 0o600); err != nil {
			return err
		}
		signer, err := ssh.NewSignerFromKey(k.key)
		if err != nil {
			return err
		}
		if err := os.WriteFile(k.path+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
			return err
		}
		if k.path == b.keyPath {
			b.signer = signer
		}
	}
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := copyFile(b.keyPath+".pub", authKeys, 0o600); err != nil {
		return err
	}

	// The shells get an empty home directory unless -real-home: a login
	// shell reading the user's rc files (pyenv, nvm, ...) can cost more
	// CPU than the login itself and would drown what is measured. sshd
	// sets HOME with SetEnv (applied after its own HOME); bastion reads
	// the home from its users file.
	home := b.me.home
	sshdEnv := ""
	if !b.opt.realHome {
		home = filepath.Join(dir, "home")
		if err := os.MkdirAll(home, 0o700); err != nil {
			return err
		}
		sshdEnv = "SetEnv HOME=" + home + "\n"
	}

	// OpenSSH's sshd: as this user, no PAM, generous startup limits so
	// the load generator is not refused.
	sshdCfg := filepath.Join(dir, "sshd_config")
	cfg := fmt.Sprintf(`# written by go run ./bench
`+sshdEnv+`ListenAddress 127.0.0.1:%d
HostKey %s
PidFile none
AuthorizedKeysFile %s
AllowUsers %s
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
AllowAgentForwarding no
MaxStartups 10000
MaxSessions 64
LoginGraceTime 30
AcceptEnv LANG LC_*
Subsystem sftp %s
LogLevel INFO
`, b.opt.sshdPort, b.hostKeyPath, authKeys, b.me.name, b.tools.sftpServer)
	if err := os.WriteFile(sshdCfg, []byte(cfg), 0o600); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		// Debian's sshd needs its privilege-separation directory.
		if _, err := os.Stat("/run/sshd"); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
				return fmt.Errorf("sshd needs /run/sshd: %w", err)
			}
			fmt.Fprintln(b.out, "created /run/sshd (sshd's privilege separation directory)")
		}
	}
	if out, err := exec.Command(b.tools.sshd, "-t", "-f", sshdCfg).CombinedOutput(); err != nil {
		return fmt.Errorf("sshd rejects the generated config %s: %v\n%s", sshdCfg, err, out)
	}

	// bastion: the dev command with the same host key and user key, and
	// limits raised like sshd's.
	bastionCfg := filepath.Join(dir, "bastion.yaml")
	directory := ""
	if !b.opt.realHome {
		users := filepath.Join(dir, "users.yaml")
		gids := ""
		if len(b.me.gids) > 0 {
			gids = fmt.Sprintf("\n    gids: %v", strings.Join(strings.Fields(fmt.Sprint(b.me.gids)), ", "))
		}
		data := fmt.Sprintf("users:\n  - name: %s\n    uid: %d\n    gid: %d%s\n    home: %s\n    shell: %s\n    key_files: [%s]\n",
			b.me.name, b.me.uid, b.me.gid, gids, home, b.me.shell, b.keyPath+".pub")
		if err := os.WriteFile(users, []byte(data), 0o600); err != nil {
			return err
		}
		directory = "directory:\n  type: static\n  file: " + users + "\n"
	}
	yaml := fmt.Sprintf(`# written by go run ./bench
`+directory+`ssh:
  listen: 127.0.0.1:%d
  host_keys: [%s]
  sftp_server: %s
limits:
  max_startups: 10000
  per_source_max_startups: 10000
  max_conns_per_source: 10000
  penalties:
    enabled: false
  max_sessions_per_user: 10000
  shutdown_grace: 1s
log:
  level: info
`, b.opt.bastionPort, b.hostKeyPath, b.tools.sftpServer)
	if err := os.WriteFile(bastionCfg, []byte(yaml), 0o600); err != nil {
		return err
	}

	b.servers = []*server{
		{name: "OpenSSH", alias: "openssh", port: b.opt.sshdPort, flag: "-sshd-port", logPath: filepath.Join(dir, "sshd.log"),
			args: []string{b.tools.sshd, "-D", "-e", "-f", sshdCfg}},
		{name: "bastion", alias: "bastion", port: b.opt.bastionPort, flag: "-bastion-port", logPath: filepath.Join(dir, "bastion.log"),
			args: []string{b.bastionBin, "dev", "--config", bastionCfg, "--listen", fmt.Sprintf("127.0.0.1:%d", b.opt.bastionPort),
				"--state-dir", filepath.Join(dir, "bastion-state"), "--authorized-keys", b.keyPath + ".pub"}},
	}

	if slices.Contains(b.opt.ciphers, dropbearVariant) {
		if err := b.setupDropbear(); err != nil {
			return err
		}
	}

	// The client side: one ssh_config for ssh, scp, sftp.
	b.sshConfig = filepath.Join(dir, "ssh_config")
	hosts := fmt.Sprintf("Host openssh\n  HostName 127.0.0.1\n  Port %d\nHost bastion\n  HostName 127.0.0.1\n  Port %d\n", b.opt.sshdPort, b.opt.bastionPort)
	return writeSSHConfig(b.sshConfig, hosts, b.me.name, b.keyPath, 10)
}

// writeSSHConfig writes an ssh_config for the bench's OpenSSH clients:
// hosts (Host blocks), then, for every host, the user, the one key, no
// agent, no known_hosts, no multiplexing and no prompts.
func writeSSHConfig(path, hosts, user, keyPath string, connectTimeout int) error {
	cfg := fmt.Sprintf(`# written by go run ./bench
%sHost *
  User %s
  IdentityFile %s
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile /dev/null
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking no
  UpdateHostKeys no
  CheckHostIP no
  BatchMode yes
  LogLevel ERROR
  ControlMaster no
  ControlPath none
  ForwardAgent no
  ForwardX11 no
  ConnectTimeout %d
`, hosts, user, keyPath, connectTimeout)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

func copyFile(src, dst string, perm os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, perm)
}

// becomeSubreaper makes the bench inherit orphans of the servers (sshd's
// session processes when the listener exits first), so that the final
// sweep finds them.
func becomeSubreaper() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }

// sweep kills whatever is still running below the bench and reaps it.
func sweep() {
	killProcs(descendants(os.Getpid()))
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// setupDropbear finds Dropbear's client and converts the user key to its
// format.
func (b *bench) setupDropbear() error {
	var err error
	if b.dbclient, err = exec.LookPath("dbclient"); err != nil {
		return fmt.Errorf("-ciphers %s needs Dropbear's dbclient (sudo apt-get install dropbear-bin), or leave it out of -ciphers: %w", dropbearVariant, err)
	}
	b.dropbearKey = b.keyPath + ".dropbear"
	if out, err := exec.Command("dropbearconvert", "openssh", "dropbear", b.keyPath, b.dropbearKey).CombinedOutput(); err != nil {
		return fmt.Errorf("dropbearconvert (Debian package dropbear-bin): %v\n%s", err, out)
	}
	return nil
}

// crash kills the server with SIGKILL (nothing of it can clean up) and
// waits until it is gone; its session processes are left as they are.
func (s *server) crash() {
	if !s.running() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

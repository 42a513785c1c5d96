package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// tools are the programs the bench drives, found on PATH or in the usual
// Debian places.
type tools struct {
	sshd, ssh, scp, sftp, rsync, sftpServer string
}

// need says what is missing and which Debian package provides it.
func findTools() (tools, error) {
	var t tools
	var missing []string
	look := func(name, pkg string, extra ...string) string {
		if p, err := exec.LookPath(name); err == nil {
			if abs, err := filepath.Abs(p); err == nil {
				return abs
			}
			return p
		}
		for _, p := range extra {
			if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				return p
			}
		}
		missing = append(missing, fmt.Sprintf("  %-12s (Debian package %s)", name, pkg))
		return ""
	}
	t.sshd = look("sshd", "openssh-server", "/usr/sbin/sshd", "/usr/local/sbin/sshd")
	t.ssh = look("ssh", "openssh-client")
	t.scp = look("scp", "openssh-client")
	t.sftp = look("sftp", "openssh-client")
	t.rsync = look("rsync", "rsync")
	t.sftpServer = look("sftp-server", "openssh-sftp-server", "/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server", "/usr/libexec/openssh/sftp-server")
	if len(missing) > 0 {
		pkgs := map[string]bool{}
		var list []string
		for _, m := range missing {
			p := m[strings.LastIndex(m, " ")+1 : len(m)-1]
			if !pkgs[p] {
				pkgs[p] = true
				list = append(list, p)
			}
		}
		return t, fmt.Errorf("missing programs; the bench installs nothing itself:\n%s\ninstall them with:\n  sudo apt-get install %s",
			strings.Join(missing, "\n"), strings.Join(list, " "))
	}
	return t, nil
}

// account is the user both servers serve: whoever runs the bench.
type account struct {
	name, home, shell string
	uid, gid          int
	gids              []int // supplementary groups
}

func currentAccount() (account, error) {
	u, err := user.Current()
	if err != nil {
		return account{}, fmt.Errorf("who am I? %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	a := account{name: u.Username, home: u.HomeDir, uid: uid, gid: gid, shell: "/bin/sh"}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.Atoi(s); err == nil && g != gid {
				a.gids = append(a.gids, g)
			}
		}
	}
	if f, err := os.Open("/etc/passwd"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Split(sc.Text(), ":")
			if len(fields) == 7 && fields[0] == u.Username && fields[6] != "" {
				a.shell = fields[6]
			}
		}
	}
	return a, nil
}

// checkPort fails with a clear message when something listens on port.
func checkPort(name string, port int, flagName string) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		who := ""
		if errors.Is(err, syscall.EADDRINUSE) {
			if c, derr := net.DialTimeout("tcp", addr, time.Second); derr == nil {
				_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				c.Close()
				if n > 0 {
					who = fmt.Sprintf(" (it answers %q)", strings.TrimSpace(string(buf[:n])))
				}
			}
			return fmt.Errorf("port %d on 127.0.0.1, wanted for %s, is already in use%s; stop what uses it or pick another port with %s", port, name, who, flagName)
		}
		return fmt.Errorf("cannot listen on %s for %s: %v (pick another port with %s)", addr, name, err, flagName)
	}
	ln.Close()
	return nil
}

// moduleRoot finds the bastion module's directory (where go.mod is).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil {
			if strings.Contains(string(data), "module github.com/bastion-ssh/bastion") {
				return d, nil
			}
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	return "", fmt.Errorf("run the bench from inside the bastion module (no go.mod for github.com/bastion-ssh/bastion above %s)", dir)
}

// envInfo is the machine and the versions, as written beside the table.
type envInfo struct {
	Date      string `json:"date"`
	Host      string `json:"host"`
	Cores     int    `json:"cores"`
	CPU       string `json:"cpu"`
	MemoryGiB string `json:"memory_gib"`
	Kernel    string `json:"kernel"`
	OS        string `json:"os"`
	OpenSSH   string `json:"openssh"`
	Sshd      string `json:"sshd_banner"`
	Bastion   string `json:"bastion"`
	Go        string `json:"go"`
	XCrypto   string `json:"x_crypto"`
	Quick     bool   `json:"quick"`
}

func collectEnv(ctx context.Context, t tools, gitDir, bastionBin string) envInfo {
	e := envInfo{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Cores: runtime.NumCPU(), Go: runtime.Version()}
	e.Host, _ = os.Hostname()
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				e.MemoryGiB = fmt.Sprintf("%.0f", kb/1024/1024)
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(data))
	}
	if data, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				e.OS = strings.Trim(v, `"`)
			}
		}
	}
	if out, err := exec.CommandContext(ctx, t.ssh, "-V").CombinedOutput(); err == nil {
		e.OpenSSH = strings.TrimSpace(string(out))
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "golang.org/x/crypto" {
				e.XCrypto = d.Version
				if d.Replace != nil {
					e.XCrypto += " => " + d.Replace.Path + " " + d.Replace.Version
				}
			}
		}
	}
	e.Bastion = bastionVersion(ctx, gitDir, bastionBin)
	if out, err := exec.CommandContext(ctx, "go", "version", bastionBin).Output(); err == nil {
		if f := strings.Fields(string(out)); len(f) >= 2 {
			e.Go = f[len(f)-1]
		}
	}
	return e
}

// bastionVersion is the binary's version and the commit of gitDir, the
// tree it was built from.
func bastionVersion(ctx context.Context, gitDir, bin string) string {
	v := "unknown"
	if out, err := exec.CommandContext(ctx, bin, "version").Output(); err == nil {
		v = strings.TrimSpace(string(out))
	}
	if gitDir == "" {
		return v
	}
	if out, err := exec.CommandContext(ctx, "git", "-C", gitDir, "rev-parse", "--short", "HEAD").Output(); err == nil {
		v += ", commit " + strings.TrimSpace(string(out))
		if out, err := exec.CommandContext(ctx, "git", "-C", gitDir, "status", "--porcelain", "--untracked-files=no", "--", "sshd", "session", "cmd", "auth", "config").Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
			v += " with local changes"
		}
	}
	return v
}

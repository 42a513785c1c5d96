package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/bastion-ssh/bastion/config"
)

// openSSHSFTPServers are where OpenSSH's sftp-server lives on common
// systems, in the order they are tried.
var openSSHSFTPServers = []string{
	"/usr/lib/openssh/sftp-server",                               // Debian, Ubuntu
	"/usr/libexec/openssh/sftp-server",                           // Fedora, RHEL, SUSE
	"/usr/lib/ssh/sftp-server",                                   // Arch, Alpine
	"/usr/libexec/sftp-server",                                   // macOS, Gentoo
	"/opt/homebrew/opt/openssh/libexec/sftp-server",              // Homebrew, Apple silicon
	"/usr/local/opt/openssh/libexec/sftp-server",                 // Homebrew, Intel
	"/home/linuxbrew/.linuxbrew/opt/openssh/libexec/sftp-server", // Homebrew on Linux
}

// kubeSFTPServer is where the shell image is expected to have OpenSSH's
// sftp-server when ssh.sftp_server is unset (the kube backend).
const kubeSFTPServer = "/usr/lib/openssh/sftp-server"

// kubeSFTPFallback runs the image's OpenSSH sftp-server, else the
// helper's (pods made with kube.pod.helper_image), else says what is
// missing. The account's shell runs it.
const kubeSFTPFallback = `if [ -x ` + kubeSFTPServer + ` ]; then exec ` + kubeSFTPServer + `; fi; ` +
	`if [ -x /.bastion/bastion-helper ]; then exec /.bastion/bastion-helper sftp-server; fi; ` +
	`echo "sftp: this shell image has no sftp-server (ask the operators)" >&2; exit 127`

// kubeHelper reports whether any cluster's pods get bastion-helper.
func kubeHelper(cfg config.Config) bool {
	if cfg.Kube.Pod.HelperImage != "" {
		return true
	}
	for _, c := range cfg.Kube.Clusters {
		if c.Pod.HelperImage != "" {
			return true
		}
	}
	return false
}

// sftpSearchRootEnv is a test seam: a directory prepended to every path in
// openSSHSFTPServers (an empty directory stands for a machine without
// OpenSSH's sftp-server).
const sftpSearchRootEnv = "BASTION_SFTP_SEARCH_ROOT"

// sftpChoice is the command the sftp subsystem runs and one line saying
// which server that is.
type sftpChoice struct {
	Command string
	Line    string
	BuiltIn bool
}

// chooseSFTP decides what the sftp subsystem runs: ssh.sftp_server when
// set; with the local backend OpenSSH's sftp-server from the usual places,
// else bastion's own (`bastion sftp-server`, as the account); with the
// kube backend the image's OpenSSH sftp-server.
func chooseSFTP(cfg config.Config) sftpChoice {
	if cfg.SSH.SFTPServer != "" {
		return sftpChoice{Command: cfg.SSH.SFTPServer, Line: "sftp: " + cfg.SSH.SFTPServer + " (ssh.sftp_server)"}
	}
	if cfg.Backend.Type != "local" {
		if !kubeHelper(cfg) {
			return sftpChoice{Command: kubeSFTPServer, Line: "sftp: the shell image's " + kubeSFTPServer}
		}
		return sftpChoice{Command: kubeSFTPFallback, Line: "sftp: the shell image's " + kubeSFTPServer + ", else bastion-helper's built-in server"}
	}
	root := os.Getenv(sftpSearchRootEnv)
	for _, p := range openSSHSFTPServers {
		if st, err := os.Stat(filepath.Join(root, p)); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return sftpChoice{Command: shellQuote(filepath.Join(root, p)), Line: "sftp: OpenSSH's sftp-server (" + filepath.Join(root, p) + ")"}
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return sftpChoice{Command: openSSHSFTPServers[0], Line: "sftp: no OpenSSH sftp-server found and bastion cannot find its own binary (" + err.Error() + "); scp and sftp will fail: install openssh-sftp-server or set ssh.sftp_server"}
	}
	line := "sftp: bastion's built-in SFTP server (no OpenSSH sftp-server found; to use OpenSSH's, install openssh-sftp-server or set ssh.sftp_server)"
	if os.Geteuid() == 0 && !reachableByAll(exe) {
		line += "; warning: " + exe + " is not executable by other users, so sessions that run as another uid cannot start it"
	}
	return sftpChoice{Command: shellQuote(exe) + " sftp-server", Line: line, BuiltIn: true}
}

// reachableByAll reports whether any user may execute path: the file is
// world-executable and every directory above it world-searchable.
func reachableByAll(path string) bool {
	for p := path; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil || st.Mode()&0o001 == 0 {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

// shellQuote quotes s for the account's shell (the backend runs the
// subsystem with SHELL -c).
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Package sftpserver is bastion's own SFTP server: SFTP version 3 with
// OpenSSH's posix-rename, statvfs and hardlink extensions (through
// github.com/pkg/sftp) and its limits extension (limits.go, around
// pkg/sftp: OpenSSH's client then moves files in 255 KiB requests),
// served on a byte stream by a process that already runs as the account.
// It is what `bastion sftp-server` and the in-pod helper run where
// OpenSSH's sftp-server is not installed.
//
// It takes OpenSSH sftp-server's flags where they make sense (-R, -d, -u)
// so that ssh.sftp_server lines written for one work with the other.
//
// It must not import sshd, session, config or k8s.io/client-go: it is linked
// into the small static helper binary that runs inside pods, and it never
// switches users (the backend starts it as the account).
package sftpserver

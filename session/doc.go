// Package session defines the Backend seam: how a process for an SSH
// session (a login shell, a command, an sftp-server) is started and how a
// forwarded TCP connection (ssh -L) is dialled, for one account.
//
// Backends live in sub-packages: session/local (pty processes on this
// host) and session/kube (pods). session/sessiontest is the conformance
// suite every backend must pass. This package must not import the SSH
// libraries; sshd translates SSH requests into Requests.
package session

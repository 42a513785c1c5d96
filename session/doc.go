// Package session defines the Backend seam: how a process for an SSH
// session (a login shell, a command, an sftp-server) is started and how a
// forwarded TCP connection (ssh -L) is dialled, for one account.
//
// Backends live in sub-packages: session/local (pty processes on this
// host) and session/kube (pods). session/sessiontest is the conformance
// suite every backend must pass. sshd translates SSH requests into
// Requests.
//
// golang.org/x/crypto/ssh reaches it only through auth's key type. It
// must not import sshd, session/local, session/kube, auth/ldap or
// k8s.io/client-go.
package session

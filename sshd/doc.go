// Package sshd is bastion's SSH server, and the only package that imports
// the SSH library (golang.org/x/crypto/ssh). It owns the listener, host
// keys, public-key authentication against an auth.Directory, the limits
// (login grace time, auth tries, unauthenticated-connection cap, per-source
// and per-user caps, keepalives, idle and session timeouts), channel
// dispatch (session: shell, exec, subsystem sftp, become; direct-tcpip:
// ssh -L through a forwarding policy) and the graceful drain.
//
// Every connection is a goroutine tree rooted in the connection's context:
// closing the connection cancels everything below it, and Shutdown waits
// for every tree. sshd knows auth.Directory and session.Backend, never
// LDAP or Kubernetes.
package sshd

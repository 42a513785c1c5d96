// Package local is the embedded default backend: each session is a process
// on this host, started under a pseudo-terminal (github.com/creack/pty)
// when the client asked for one and with pipes otherwise.
//
// When bastion runs as root, processes run with the account's uid, gid
// and supplementary groups; otherwise they run as bastion's own user.
// Forwarded connections are dialled from this host, and session.Listener
// listens on this host's loopback (ssh -R) or on a private unix socket
// owned by the account (agent forwarding). It knows nothing of SSH; it
// only implements session.Backend, session.Starter and session.Listener.
//
// An idle session parks no goroutine of its own but the stdin copier:
// process exits and pty output come from one epoll set (exits.go), the
// session's end from context.AfterFunc (Start).
//
// It must not import sshd, session/kube or k8s.io/client-go.
package local

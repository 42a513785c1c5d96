// Package podhelper is what bastion's small helper binary
// (cmd/bastion-helper) does inside a shell pod, where the operator's image
// promises nothing beyond a POSIX shell:
//
//   - run: start a session's process (the account's login shell or SHELL -c
//     COMMAND) with the session's variables, token and pids limit, wait for
//     it, and exit with its status; when a signal killed it, leave the
//     signal's name for status, since the exec API reports only a number;
//     when it exited 0, leave that too, since the exec API reports a
//     stream cut before the status as success. Asked to (TrailerVar), it
//     also ends its output with a trailer saying how the process ended,
//     so that bastion knows without asking status.
//   - hangup: end a dropped session the way a terminal hang-up does: SIGHUP
//     and SIGCONT to every process still in the session's POSIX session,
//     then SIGKILL after a grace period to those that neither ignore nor
//     catch SIGHUP. What left the session (setsid, tmux and screen servers)
//     or ignores SIGHUP (nohup) lives on.
//   - signal: deliver an SSH "signal" request to the session's process.
//   - status: print and forget how a session's process ended (killed by
//     a signal, exited 0, or no record).
//   - sftp-server: internal/sftpserver, as the account.
//   - relay: listen in the pod on bastion's behalf (ssh -R on the pod's
//     loopback, agent forwarding on a private socket) and hand each
//     connection to bastion through a rendezvous port that bastion reaches
//     by port-forward (relay.go has the protocol).
//   - install: copy the binary into the pod's shared volume (the init
//     container's job; bastion's image has no cp).
//
// It must not import k8s.io/client-go, sshd, session or config: the binary is
// copied into every pod and stays small and static (CGO_ENABLED=0).
package podhelper

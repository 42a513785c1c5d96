// Package become is `become TOOL [COMMAND...]` typed in a shell that
// bastion started: the small protocol between the `become` command in the
// shell (the client: bastion-helper in a pod, bastion itself with the
// local backend) and bastion's sshd, and the client.
//
// bastion listens, for each interactive shell of a person, on a unix
// socket private to that person's account (session.Listener) and puts its
// path in the shell's environment (SockVar). The client connects to it;
// the connection is the session's own stream back to bastion, so no
// credential is ever kept in the shell. On it the client sends one
// Request (tool, command, terminal), bastion answers with one Reply
// (refused, with the one-line reason, or accepted), then the two relay
// the tool session's stdin, stdout, stderr, window sizes and signals as
// frames, and bastion ends with one Exit. Frame sizes are bounded on both
// sides (MaxRequest, MaxData).
//
// Who the person is, whether they may act as the tool, and running the
// tool's session are sshd's job, never the client's.
//
// The client is linked into the small static helper copied into every
// pod, so the package keeps to the standard library's small parts and
// golang.org/x/term. It must not import sshd, session, auth, config,
// internal/clip or k8s.io/client-go.
package become

// Package sessiontest is the conformance suite for session.Backend
// implementations: exit codes, stdout/stderr separation, stdin EOF, large
// output, signals, TTY size and resize, cancellation, the environment,
// an sftp-server round trip, and Dial. Every backend's tests call Run.
//
// It drives the backend directly, with no SSH in between, so a failure
// points at the backend.
//
// It is for tests only: non-test code must not import it. It must not
// import sshd, session/local or session/kube: every backend's tests
// import it, not the other way round.
package sessiontest

// Package sessiontest is the conformance suite for session.Backend
// implementations: exit codes, stdout/stderr separation, stdin EOF, large
// output, signals, TTY size and resize, cancellation, the environment,
// an sftp-server round trip, and Dial. Every backend's tests call Run.
//
// It drives the backend directly, with no SSH in between, so a failure
// points at the backend.
package sessiontest

// Package recording saves interactive sessions as asciicast v2 files
// (playable with `asciinema play`), one per session, named
// DIR/USER/YYYYMMDD-HHMMSS-CONN-N.cast so they can be found by user and
// time.
//
// Recording must never block or slow the session: output is handed to a
// bounded queue and written by the recorder's own goroutine; when the
// queue is full or the size cap is reached, bytes are dropped and
// counted, and the session goes on.
//
// It must not import golang.org/x/crypto/ssh or other bastion packages.
package recording

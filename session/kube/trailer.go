package kube

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bastion-ssh/bastion/internal/podhelper"
	"github.com/bastion-ssh/bastion/session"
)

// exitTrailer passes a session's output on, except the helper's trailer
// (podhelper.Trailer), which says how the session's process ended. The
// exec API reports a stream cut before its status as success; without
// the trailer, bastion asks `bastion-helper status` in another exec
// (endedWith), which costs the user the time of an exec at every exit
// and, on a node starting many pods, as much node work as a login's own
// exec.
//
// The trailer usually ends the stream, but not always: what the session
// started in the background (`cmd &`) may write after the session's
// process exited, as it may under sshd, so a trailer is taken out
// wherever it is, and the last one says how the session ended. Bytes that
// could be the start of a trailer (ESC _ bastion-exit TOKEN, then the
// status's few letters) at the end of a write are held back until the
// next write completes or refutes it, the stream ends, or a short while
// passes (holdShort; holdLong once the session's whole token has come):
// output is never lost or reordered, and never held for long, since a
// program that talks with the client through the session (rsync, a
// protocol of the user's) waits for its last bytes to arrive before it
// says more, and binary output ends in an ESC once in 256 writes. The
// helper writes a trailer in one write, so its parts arrive together; a
// trailer whose start went out after the wait (a stream split and
// delayed inside it) still gives the status, and the rest of it goes out
// too, so that a terminal sees a whole APC sequence (which it ignores).
// The token is the session's own, so output of other sessions (a file
// with a trailer in it, cat'ed) is left alone. A session's process can
// forge its own trailer only as far as its own exit status, which it
// decides anyway.
//
// Write is called by client-go's stdout copy, end after the exec
// returned; an exec cancelled by its context returns while that copy may
// still write, so the two (and the hold's timer) are serialized, and
// what is written after end goes straight through.
type exitTrailer struct {
	w      io.Writer
	prefix []byte
	// How long a possible start of a trailer is held back: shorter than
	// the session's prefix, and the whole prefix (the token: only the
	// helper writes it).
	holdShort, holdLong time.Duration

	mu sync.Mutex
	// pending is a possible start of a trailer (it begins with ESC) held
	// back from the last write; its first sent bytes already went out,
	// when the hold ran out (timer).
	pending []byte
	sent    int
	timer   *time.Timer
	status  *session.ExitStatus // what the last trailer said
	ended   bool
}

// How long exitTrailer holds back a possible start of a trailer.
const (
	trailerHoldShort = 20 * time.Millisecond
	trailerHoldLong  = time.Second
)

func newExitTrailer(w io.Writer, token string) *exitTrailer {
	return &exitTrailer{w: w, prefix: []byte(podhelper.TrailerPrefix(token)), holdShort: trailerHoldShort, holdLong: trailerHoldLong}
}

// trailerStatusMax bounds the status words between the prefix and the end
// ("exit 255", "VTALRM 0").
const trailerStatusMax = 16

func (t *exitTrailer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return t.w.Write(p)
	}
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	data, out := p, 0 // data[out:] is not written yet
	if len(t.pending) > 0 {
		data, out = append(t.pending, p...), t.sent
		t.pending, t.sent = nil, 0
	}
	for pos := 0; ; {
		j := bytes.IndexByte(data[pos:], 0x1b)
		if j < 0 {
			break
		}
		i := pos + j
		n, st, partial := t.match(data[i:])
		switch {
		case partial:
			if err := t.write(data[out:max(i, out)]); err != nil {
				return 0, err
			}
			t.pending, t.sent = bytes.Clone(data[i:]), max(out-i, 0)
			t.hold()
			return len(p), nil
		case n > 0:
			t.status = &st
			upTo := i // the trailer is taken out...
			if i < out {
				upTo = i + n // ...unless its start went out already: then the rest goes out too
			}
			if err := t.write(data[out:upTo]); err != nil {
				return 0, err
			}
			out, pos = i+n, i+n
		default:
			pos = i + 1
		}
	}
	if err := t.write(data[out:]); err != nil {
		return 0, err
	}
	return len(p), nil
}

// hold starts the timer that writes the pending bytes not sent yet, if
// no write comes first. t.mu is held.
func (t *exitTrailer) hold() {
	if t.sent == len(t.pending) {
		return
	}
	d := t.holdShort
	if len(t.pending) >= len(t.prefix) {
		d = t.holdLong
	}
	var timer *time.Timer
	timer = time.AfterFunc(d, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.timer != timer || t.ended {
			return // a write or the end came first
		}
		t.timer = nil
		if err := t.write(t.pending[t.sent:]); err == nil {
			t.sent = len(t.pending)
		}
	})
	t.timer = timer
}

func (t *exitTrailer) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, err := t.w.Write(b)
	return err
}

// match looks at b, which starts with ESC: a whole trailer with status
// words parseStatus reads (its length n and the status), the start of one
// that b ends in the middle of (partial), or neither.
func (t *exitTrailer) match(b []byte) (n int, st session.ExitStatus, partial bool) {
	if len(b) <= len(t.prefix) {
		return 0, session.ExitStatus{}, bytes.HasPrefix(t.prefix, b)
	}
	if !bytes.HasPrefix(b, t.prefix) {
		return 0, session.ExitStatus{}, false
	}
	rest := b[len(t.prefix):]
	end := []byte(podhelper.TrailerEnd)
	for i, c := range rest {
		if c == end[0] {
			tail := rest[i:]
			switch {
			case bytes.HasPrefix(tail, end):
				st, ok := parseStatus(string(rest[:i]))
				if !ok {
					return 0, session.ExitStatus{}, false
				}
				return len(t.prefix) + i + len(end), st, false
			case len(tail) < len(end) && bytes.HasPrefix(end, tail):
				return 0, session.ExitStatus{}, true
			}
			return 0, session.ExitStatus{}, false
		}
		if i >= trailerStatusMax || !(c == ' ' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return 0, session.ExitStatus{}, false
		}
	}
	return 0, session.ExitStatus{}, true
}

// end is called when the stream ended: the status the last trailer gave,
// or ok false (none came; bytes held back go out as output).
func (t *exitTrailer) end() (st session.ExitStatus, ok bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ended = true
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	err = t.write(t.pending[t.sent:])
	t.pending, t.sent = nil, 0
	if t.status == nil {
		return session.ExitStatus{}, false, err
	}
	return *t.status, true, err
}

// parseStatus reads how the helper says a process ended: "exit N" (a
// trailer's words), podhelper.Exited0, or a killing signal's "NAME CORE".
func parseStatus(s string) (session.ExitStatus, bool) {
	if code, found := strings.CutPrefix(s, "exit "); found {
		n, err := strconv.Atoi(code)
		if err != nil || n < 0 || n > 255 || strconv.Itoa(n) != code {
			return session.ExitStatus{}, false
		}
		return session.ExitStatus{Code: n}, true
	}
	return parseKilledBy(s)
}

package kube

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/bastion-ssh/bastion/internal/podhelper"
	"github.com/bastion-ssh/bastion/session"
)

// exitTrailer passes a session's output on, except the helper's trailer
// (podhelper.Trailer) at its very end, which says how the session's
// process ended. The exec API reports a stream cut before its status as
// success; without the trailer, bastion asks `bastion-helper status` in
// another exec (endedWith), which costs the user the time of an exec at
// every exit and, on a node starting many pods, as much node work as a
// login's own exec.
//
// While the output's last bytes could be the start of the trailer (they
// are a prefix of it: ESC _ bastion-exit TOKEN, then the status's few
// letters) they are held back; the next write either completes the
// trailer or releases them. Output that merely looks like the start of a
// trailer is therefore delayed until the next write or the end, never
// lost or reordered. Only a trailer that ends the stream counts: one the
// session's own process printed, followed by more output, is output. A
// session's process can forge its own trailer only as far as its own
// exit status, which it decides anyway.
//
// Write is called by client-go's stdout copy, end after the exec
// returned; an exec cancelled by its context returns while that copy may
// still write, so the two are serialized, and what is written after end
// goes straight through.
type exitTrailer struct {
	w      io.Writer
	prefix []byte
	mu     sync.Mutex
	held   []byte
	ended  bool
}

func newExitTrailer(w io.Writer, token string) *exitTrailer {
	return &exitTrailer{w: w, prefix: []byte(podhelper.TrailerPrefix(token))}
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
	data := p
	if len(t.held) > 0 {
		data = append(t.held, p...)
		t.held = nil
	}
	i := t.trailerStart(data)
	if i > 0 {
		if _, err := t.w.Write(data[:i]); err != nil {
			return 0, err
		}
	}
	if i < len(data) {
		t.held = bytes.Clone(data[i:])
	}
	return len(p), nil
}

// trailerStart is where, in data, a trailer may start: the first ESC
// whose rest could still be, or is, a whole trailer; len(data) if none.
func (t *exitTrailer) trailerStart(data []byte) int {
	from := max(0, len(data)-(len(t.prefix)+trailerStatusMax+len(podhelper.TrailerEnd)))
	for i := from; i < len(data); i++ {
		j := bytes.IndexByte(data[i:], 0x1b)
		if j < 0 {
			break
		}
		i += j
		if t.couldBe(data[i:]) {
			return i
		}
	}
	return len(data)
}

// couldBe reports whether b is a trailer or the start of one.
func (t *exitTrailer) couldBe(b []byte) bool {
	if len(b) <= len(t.prefix) {
		return bytes.HasPrefix(t.prefix, b)
	}
	if !bytes.HasPrefix(b, t.prefix) {
		return false
	}
	rest := b[len(t.prefix):]
	end := []byte(podhelper.TrailerEnd)
	for i, c := range rest {
		if c == end[0] {
			tail := rest[i:]
			return len(tail) <= len(end) && bytes.HasPrefix(end, tail)
		}
		if i >= trailerStatusMax || !(c == ' ' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

// end is called when the stream ended: the status the trailer gave, or
// ok false (the bytes held back, not a whole trailer, go out as output).
func (t *exitTrailer) end() (st session.ExitStatus, ok bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ended = true
	held := t.held
	t.held = nil
	if n := len(t.prefix); len(held) > n+len(podhelper.TrailerEnd) && bytes.HasPrefix(held, t.prefix) &&
		bytes.HasSuffix(held, []byte(podhelper.TrailerEnd)) {
		if st, ok := parseStatus(string(held[n : len(held)-len(podhelper.TrailerEnd)])); ok {
			return st, true, nil
		}
	}
	if len(held) > 0 {
		_, err = t.w.Write(held)
	}
	return session.ExitStatus{}, false, err
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

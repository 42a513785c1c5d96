package kube

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/internal/podhelper"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/sessiontest"
)

func TestExitTrailer(t *testing.T) {
	t.Parallel()
	const token = "0123abcd"
	tr := func(status string) string { return podhelper.Trailer(token, status) }
	for _, c := range []struct {
		name, stream, out string
		st                *session.ExitStatus // nil: no trailer
	}{
		{name: "exit 0", stream: "hello\r\n" + tr("exit 0"), out: "hello\r\n", st: &session.ExitStatus{}},
		{name: "exit 3", stream: "x" + tr("exit 3"), out: "x", st: &session.ExitStatus{Code: 3}},
		{name: "only the trailer", stream: tr("exit 0"), out: "", st: &session.ExitStatus{}},
		{name: "signal", stream: "y" + tr("TERM 0"), out: "y", st: &session.ExitStatus{Signal: "TERM"}},
		{name: "core", stream: tr("SEGV 1"), out: "", st: &session.ExitStatus{Signal: "SEGV", CoreDumped: true}},
		{name: "none: a cut stream", stream: "partial output", out: "partial output"},
		{name: "escape sequences are output", stream: "a\x1b[1mb\x1b]0;title\x07\x1b_G;x\x1b\\", out: "a\x1b[1mb\x1b]0;title\x07\x1b_G;x\x1b\\"},
		{name: "an unfinished trailer is output", stream: "abc" + tr("exit 0")[:20], out: "abc" + tr("exit 0")[:20]},
		{name: "a trailer without its end is output", stream: strings.TrimSuffix(tr("exit 0"), podhelper.TrailerEnd), out: strings.TrimSuffix(tr("exit 0"), podhelper.TrailerEnd)},
		{name: "output after it: a background job's", stream: "a" + tr("exit 0") + "late\n", out: "alate\n", st: &session.ExitStatus{}},
		{name: "the last counts", stream: "z" + tr("exit 0") + "y" + tr("exit 4"), out: "zy", st: &session.ExitStatus{Code: 4}},
		{name: "a bad one in the middle is output", stream: "z" + tr("exit 999") + "y" + tr("exit 4"), out: "z" + tr("exit 999") + "y", st: &session.ExitStatus{Code: 4}},
		{name: "another session's token", stream: podhelper.Trailer("ffff", "exit 0"), out: podhelper.Trailer("ffff", "exit 0")},
		{name: "bad status", stream: tr("exit 300"), out: tr("exit 300")},
		{name: "status too long", stream: tr(strings.Repeat("A", 40)), out: tr(strings.Repeat("A", 40))},
		{name: "status with an escape", stream: tr("exit \x1b0"), out: tr("exit \x1b0")},
		{name: "big output", stream: strings.Repeat("0123456789\x1b", 10000) + tr("exit 0"), out: strings.Repeat("0123456789\x1b", 10000), st: &session.ExitStatus{}},
	} {
		// Every split of the stream into two writes, and one write per byte.
		splits := [][]string{{c.stream}}
		for i := 1; i < len(c.stream) && len(c.stream) < 200; i++ {
			splits = append(splits, []string{c.stream[:i], c.stream[i:]})
		}
		var bytewise []string
		for i := range len(c.stream) {
			bytewise = append(bytewise, c.stream[i:i+1])
		}
		splits = append(splits, bytewise)
		for _, writes := range splits {
			var out bytes.Buffer
			et := holdingForever(newExitTrailer(&out, token))
			for _, w := range writes {
				if n, err := et.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("%s: Write(%q) = %d, %v", c.name, w, n, err)
				}
			}
			st, ok, err := et.end()
			if err != nil {
				t.Fatalf("%s: end: %v", c.name, err)
			}
			if out.String() != c.out {
				t.Errorf("%s, %d writes: output %q, want %q", c.name, len(writes), out.String(), c.out)
			}
			if ok != (c.st != nil) || ok && st != *c.st {
				t.Errorf("%s, %d writes: status %+v, %v; want %+v", c.name, len(writes), st, ok, c.st)
			}
		}
	}
}

// holdingForever makes et hold a possible start of a trailer until the
// next write or the end, whatever the time: the tests above see what the
// writes alone do.
func holdingForever(et *exitTrailer) *exitTrailer {
	et.holdShort, et.holdLong = time.Hour, time.Hour
	return et
}

// Output that is no trailer goes out at once, without a copy; what may be
// the start of one waits only for the next write (or a short while,
// below).
func TestExitTrailerHoldsBackOnlyAPossibleStart(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	et := holdingForever(newExitTrailer(&out, "tok"))
	for _, c := range []struct{ write, out string }{
		{"$ ", "$ "},
		{"a\x1b", "$ a"},
		{"[0m", "$ a\x1b[0m"},
		{"\x1b_bastion-exit to", "$ a\x1b[0m"},
		{"x", "$ a\x1b[0m\x1b_bastion-exit tox"},
	} {
		_, _ = et.Write([]byte(c.write))
		if out.String() != c.out {
			t.Fatalf("after %q: output %q, want %q", c.write, out.String(), c.out)
		}
	}
}

// What the exec's stdout copy writes after end (an exec cancelled by its
// context returns before that copy is over) goes straight out.
func TestExitTrailerAfterEnd(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	et := holdingForever(newExitTrailer(&out, "tok"))
	_, _ = et.Write([]byte("a\x1b_bastion"))
	if _, ok, _ := et.end(); ok {
		t.Fatal("a trailer's start read as a trailer")
	}
	_, _ = et.Write([]byte("\x1b_bastion-exit tok exit 0\x1b\\"))
	if want := "a\x1b_bastion\x1b_bastion-exit tok exit 0\x1b\\"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

func TestParseStatus(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]*session.ExitStatus{
		"exit 0":   {},
		"exit 255": {Code: 255},
		"TERM 0":   {Signal: "TERM"},
		"exit 256": nil,
		"exit -1":  nil,
		"exit 07":  nil,
		"exit":     nil,
		"exit x":   nil,
	} {
		st, ok := parseStatus(in)
		if (want == nil) == ok || (want != nil && st != *want) {
			t.Errorf("parseStatus(%q) = %+v, %v; want %+v", in, st, ok, want)
		}
	}
}

// What bastion makes of each answer of bastion-helper status (asked when
// no trailer came): an exit 0 recorded after a trailer was written is a
// cut stream, never a success.
func TestStatusAnswer(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		line string
		st   session.ExitStatus
		a    answer
	}{
		{"", session.ExitStatus{}, ended},
		{podhelper.Exited0, session.ExitStatus{}, ended},
		{podhelper.Exited0Trailer, session.ExitStatus{}, cutAfterExit},
		{podhelper.NoRecord, session.ExitStatus{}, notEnded},
		{"TERM 0", session.ExitStatus{Signal: "TERM"}, ended},
		{"SEGV 1", session.ExitStatus{Signal: "SEGV", CoreDumped: true}, ended},
		{"what", session.ExitStatus{}, unexpected},
	} {
		st, a := statusAnswer(c.line)
		if st != c.st || a != c.a {
			t.Errorf("statusAnswer(%q) = %+v, %d; want %+v, %d", c.line, st, a, c.st, c.a)
		}
	}
}

// A program that talks with its client through the session waits for
// its last bytes before it says more: bytes that may start a trailer are
// held back only a short while, never until the next write (the kube
// soak's exec cat hung on a chunk that ended in ESC, 1 in 256).
func TestExitTrailerHoldIsShort(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, write string }{
		{"an ESC at the end", "chunk\x1b"},
		{"the start of a trailer", "chunk\x1b_bastion-ex"},
		{"the whole prefix", "chunk\x1b_bastion-exit tok "},
		{"the prefix and a status", "chunk\x1b_bastion-exit tok exit 1\x1b"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var out sessiontest.SyncBuffer // the hold's timer writes to it
			et := newExitTrailer(&out, "tok")
			et.holdShort, et.holdLong = 5*time.Millisecond, 50*time.Millisecond
			_, _ = et.Write([]byte(c.write))
			waitFor(t, &out, c.write, 10*time.Second) // nothing more is written
			if _, ok, err := et.end(); ok || err != nil {
				t.Errorf("end: %v, %v; want no status", ok, err)
			}
			if out.String() != c.write {
				t.Errorf("output %q after end, want %q", out.String(), c.write)
			}
		})
	}
}

// A trailer split by the stream, its start written out after the hold,
// still gives the session's status; the rest of it goes out too, so that
// a terminal sees the whole (ignored) APC sequence.
func TestExitTrailerSplitAcrossTheHold(t *testing.T) {
	t.Parallel()
	tr := podhelper.Trailer("tok", "exit 7")
	for _, cut := range []int{1, 5, len(podhelper.TrailerPrefix("tok")), len(tr) - 1} {
		var out sessiontest.SyncBuffer
		et := newExitTrailer(&out, "tok")
		et.holdShort, et.holdLong = time.Millisecond, time.Millisecond
		_, _ = et.Write([]byte("out" + tr[:cut]))
		waitFor(t, &out, "out"+tr[:cut], 10*time.Second)
		_, _ = et.Write([]byte(tr[cut:] + "more"))
		if want := "out" + tr + "more"; out.String() != want {
			t.Errorf("cut at %d: output %q, want %q", cut, out.String(), want)
		}
		if st, ok, _ := et.end(); !ok || st.Code != 7 {
			t.Errorf("cut at %d: end: %+v, %v; want exit 7", cut, st, ok)
		}
	}
}

package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestHostileStringsStayOneValidLine(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := New(&buf, slog.New(slog.NewTextHandler(io.Discard, nil)))
	hostile := []string{
		"alice\n{\"event\":\"auth.success\"}",
		"\x00\x1b[31mred\r\n",
		"\"},\"user\":\"root",
		"\xff\xfe invalid utf8",
		strings.Repeat("x", 100000),
	}
	for _, h := range hostile {
		l.Emit(Event{Type: SessionStart, User: h, Command: Str(h), ExitStatus: Int(0)})
	}
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %d is not JSON: %v", n, err)
		}
		if e["event"] != SessionStart || e["exit_status"] != float64(0) {
			t.Fatalf("line %d: %v", n, e)
		}
		n++
	}
	if n != len(hostile) {
		t.Fatalf("%d lines for %d events", n, len(hostile))
	}
}

func TestFields(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := New(&buf, slog.Default())
	l.now = func() time.Time { return time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC) }
	l.Emit(Event{Type: AuthFailure, User: "bob", Fingerprint: "SHA256:x", Reason: "key not authorized", Method: "publickey"})
	want := `{"time":"2026-11-24T12:00:00Z","event":"auth.failure","user":"bob","method":"publickey","fingerprint":"SHA256:x","reason":"key not authorized"}` + "\n"
	if buf.String() != want {
		t.Fatalf("got  %s\nwant %s", buf.String(), want)
	}
	var nilLog *Log
	nilLog.Emit(Event{Type: AuthSuccess}) // must not panic
}

// A 260 KB user name or command costs a few hundred bytes of audit log,
// and says how long it was.
func TestLongStringsAreCut(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := New(&buf, slog.New(slog.NewTextHandler(io.Discard, nil)))
	long := strings.Repeat("é", 131072) // 262144 bytes
	l.Emit(Event{Type: AuthFailure, User: long, Reason: long, Destination: long, Command: Str(long)})
	if buf.Len() > 2*maxCommand+3*maxField+500 {
		t.Fatalf("event of %d bytes", buf.Len())
	}
	var e map[string]any
	if err := json.Unmarshal(buf.Bytes(), &e); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"user", "reason", "destination", "command"} {
		if s, _ := e[k].(string); !strings.HasSuffix(s, "…(cut, 262144 bytes)") {
			t.Errorf("%s: %.80q…, want the cut marker", k, s)
		}
	}
}

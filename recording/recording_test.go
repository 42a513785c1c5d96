package recording

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func readCast(t *testing.T, path string) (map[string]any, [][]any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() {
		t.Fatal("empty recording")
	}
	var hdr map[string]any
	if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil {
		t.Fatalf("header: %v", err)
	}
	var events [][]any
	for sc.Scan() {
		var e []any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event %q: %v", sc.Text(), err)
		}
		events = append(events, e)
	}
	return hdr, events
}

func TestRecordAndReplay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	r, err := Start(dir, 1<<20, Header{User: "alice", Conn: "00002a", Seq: 1, Width: 80, Height: 24, Term: "xterm", Shell: "/bin/bash", Start: start}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := dir + "/alice/20261124-100000-00002a-1.cast"; r.Path() != want {
		t.Fatalf("path %s, want %s", r.Path(), want)
	}
	r.Write([]byte("hello \x1b[1mworld\x1b[0m\r\n"))
	r.Resize(100, 30)
	r.Write([]byte("bye\r\n"))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	hdr, ev := readCast(t, r.Path())
	if hdr["version"] != float64(2) || hdr["width"] != float64(80) || hdr["height"] != float64(24) {
		t.Fatalf("header %v", hdr)
	}
	var out strings.Builder
	for _, e := range ev {
		if e[1] == "o" {
			out.WriteString(e[2].(string))
		}
	}
	if out.String() != "hello \x1b[1mworld\x1b[0m\r\nbye\r\n" || ev[1][1] != "r" || ev[1][2] != "100x30" {
		t.Fatalf("events %v", ev)
	}
}

func TestCapStopsRecordingNotWrites(t *testing.T) {
	t.Parallel()
	var dropped int64
	r, err := Start(t.TempDir(), 4096, Header{User: "bob", Conn: "1", Start: time.Now()}, func(n int64) { dropped += n }, nil)
	if err != nil {
		t.Fatal(err)
	}
	chunk := []byte(strings.Repeat("x", 1000))
	for i := 0; i < 100; i++ {
		if n, err := r.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	r.Close()
	st, _ := os.Stat(r.Path())
	if st.Size() > 4096 {
		t.Fatalf("recording is %d bytes, cap 4096", st.Size())
	}
	if r.Dropped() < 90*1000 || dropped != r.Dropped() {
		t.Fatalf("dropped %d (callback %d)", r.Dropped(), dropped)
	}
}

func TestUnwritableDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(dir+"/alice", []byte("a file where the user directory should be"), 0o600)
	if _, err := Start(dir, 1<<20, Header{User: "alice", Conn: "1", Start: time.Now()}, nil, nil); err == nil {
		t.Fatal("want an error")
	}
}

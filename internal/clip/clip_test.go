package clip

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"alice", 256, "alice"},
		{strings.Repeat("a", 10), 4, "aaaa…(cut, 10 bytes)"},
		{"ééé", 3, "é…(cut, 6 bytes)"}, // never splits a rune
		{"", 0, ""},
	}
	for _, tt := range tests {
		if got := String(tt.in, tt.max); got != tt.want {
			t.Errorf("String(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Handler(slog.NewJSONHandler(&buf, nil), 100))
	long := strings.Repeat("x", 262144)
	log.With("user", long).Info(long, "err", errors.New(long), slog.Group("g", "name", long), "n", 3)
	out := buf.String()
	if len(out) > 1000 {
		t.Fatalf("log line of %d bytes: %.300s", len(out), out)
	}
	if c := strings.Count(out, "…(cut, 262144 bytes)"); c != 4 {
		t.Errorf("%d cut markers in %s", c, out)
	}
}

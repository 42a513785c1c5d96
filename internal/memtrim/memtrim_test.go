package memtrim

import (
	"io"
	"log/slog"
	"testing"
)

func TestCheck(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name       string
		last, trim uint64 // counters before the tick
		alloc      uint64 // at the tick
		live       uint64
		want       bool
	}{
		{"quiet after a burst", 100 * mib, 0, 100*mib + 1000, 50 * mib, true},
		{"still busy", 90 * mib, 0, 100 * mib, 50 * mib, false},
		{"quiet, burst under half the live heap", 100 * mib, 80 * mib, 100 * mib, 50 * mib, false},
		{"quiet, burst under the floor", 3 * mib, 0, 3 * mib, 1 * mib, false},
		{"quiet, small heap, burst over the floor", 5 * mib, 0, 5 * mib, 1 * mib, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			freed := 0
			calls := 0
			tr := &Trimmer{log: slog.New(slog.NewTextHandler(io.Discard, nil)), free: func() { freed++ },
				read: func() (uint64, uint64) {
					calls++
					if calls == 1 {
						return tt.alloc, tt.live
					}
					return tt.alloc + 10, tt.live / 2 // after the trim
				},
				lastAlloc: tt.last, trimAlloc: tt.trim}
			if got := tr.check(); got != tt.want || (freed == 1) != tt.want {
				t.Fatalf("check() = %v with %d frees, want %v", got, freed, tt.want)
			}
			if tt.want && tr.trimAlloc != tt.alloc+10 {
				t.Errorf("trimAlloc = %d, want the count after the trim", tr.trimAlloc)
			}
			// The next tick without new allocation must not trim again.
			if tt.want && tr.check() {
				t.Error("trimmed twice without a new burst")
			}
		})
	}
}

var sink [][]byte

// TestRealBurst runs the trimmer on this process: a burst of garbage,
// then a quiet tick, trims once.
func TestRealBurst(t *testing.T) {
	tr := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	freed := 0
	tr.free = func() { freed++ }
	for range 64 {
		sink = append(sink, make([]byte, 256<<10)) // 16 MiB
	}
	sink = nil
	if tr.check() {
		t.Fatal("trimmed during the burst")
	}
	if !tr.check() || freed != 1 {
		t.Fatalf("no trim on the quiet tick after a 16 MiB burst (%d frees)", freed)
	}
}

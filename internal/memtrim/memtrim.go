package memtrim

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// tick is how often the allocation counter is read; a tick that
	// allocated less than quiet bytes is a quiet one.
	tick  = time.Second
	quiet = 1 << 20
	// minBurst is the least allocation since the last trim worth a
	// collection; above it, half the live heap (so that the trims cost at
	// most one collection per half live heap allocated, whatever the heap).
	minBurst = 4 << 20
)

// Trimmer watches the allocation counter; see the package comment.
type Trimmer struct {
	log  *slog.Logger
	free func()
	// read returns the cumulative bytes allocated and the live heap
	// after the last collection.
	read func() (allocated, live uint64)

	lastAlloc uint64 // at the previous tick
	trimAlloc uint64 // at the last trim (or start)
}

// New returns a trimmer of this process's memory.
func New(log *slog.Logger) *Trimmer {
	samples := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/live:bytes"}}
	t := &Trimmer{log: log, free: debug.FreeOSMemory, read: func() (uint64, uint64) {
		metrics.Read(samples)
		return samples[0].Value.Uint64(), samples[1].Value.Uint64()
	}}
	t.lastAlloc, _ = t.read()
	t.trimAlloc = t.lastAlloc
	return t
}

// Run checks once a tick until ctx ends.
func (t *Trimmer) Run(ctx context.Context) {
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			t.check()
		}
	}
}

// check trims when the last tick was quiet after a burst; it reports
// whether it did.
func (t *Trimmer) check() bool {
	alloc, live := t.read()
	sinceTick, burst := alloc-t.lastAlloc, alloc-t.trimAlloc
	t.lastAlloc = alloc
	if sinceTick >= quiet || burst < max(minBurst, live/2) {
		return false
	}
	start := time.Now()
	t.free()
	after, liveAfter := t.read()
	t.lastAlloc, t.trimAlloc = after, after
	t.log.Debug("memory returned after a burst", "allocated_mib", burst>>20,
		"live_before_mib", live>>20, "live_after_mib", liveAfter>>20, "took", time.Since(start).Round(time.Millisecond))
	return true
}

package sshd

import (
	"net/netip"
	"sync"
	"time"
)

// Repeated events from one source (failed authentication attempts,
// refused connections) are logged and audited one by one only for the
// first logBurst of each kind per logWindow; the rest are counted and
// reported in one summary when the window ends.
const (
	logBurst   = 10
	logWindow  = time.Minute
	maxLogKeys = 10000 // sources tracked; beyond, one shared bucket
)

type logKey struct {
	kind string
	src  netip.Addr // the zero Addr: "other sources" once maxLogKeys is reached
}

type logLimiter struct {
	burst  int
	window time.Duration
	report func(k logKey, suppressed int, window time.Duration)

	mu      sync.Mutex
	m       map[logKey]*logBucket
	stopped bool
}

type logBucket struct {
	n, suppressed int
	timer         *time.Timer
}

func newLogLimiter(burst int, window time.Duration, report func(logKey, int, time.Duration)) *logLimiter {
	return &logLimiter{burst: burst, window: window, report: report, m: make(map[logKey]*logBucket)}
}

// allow counts one event of kind from src and reports whether it may be
// logged one by one.
func (l *logLimiter) allow(kind string, src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return true
	}
	k := logKey{kind, src}
	b := l.m[k]
	if b == nil && len(l.m) >= maxLogKeys {
		k.src = netip.Addr{}
		b = l.m[k]
	}
	if b == nil {
		b = &logBucket{}
		l.m[k] = b
		b.timer = time.AfterFunc(l.window, func() { l.flush(k) })
	}
	b.n++
	if b.n <= l.burst {
		return true
	}
	b.suppressed++
	return false
}

func (l *logLimiter) flush(k logKey) {
	l.mu.Lock()
	b := l.m[k]
	delete(l.m, k)
	l.mu.Unlock()
	if b != nil && b.suppressed > 0 {
		l.report(k, b.suppressed, l.window)
	}
}

// stop reports what is pending and lets every later event through.
func (l *logLimiter) stop() {
	l.mu.Lock()
	l.stopped = true
	m := l.m
	l.m = make(map[logKey]*logBucket)
	l.mu.Unlock()
	for k, b := range m {
		if b.timer.Stop() && b.suppressed > 0 {
			l.report(k, b.suppressed, l.window)
		}
	}
}

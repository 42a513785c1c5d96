package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// routeClientGoLogs sends client-go's own log lines (klog, process-wide)
// to log at debug level: they report, as errors, what is routine here (a
// stream closed when its session ended).
func routeClientGoLogs(log *slog.Logger) {
	// SetLogger is not safe to call concurrently (tests start servers in
	// parallel).
	klogMu.Lock()
	defer klogMu.Unlock()
	klog.SetLogger(logr.FromSlogHandler(debugOnly{log.With("component", "client-go").Handler()}))
}

var klogMu sync.Mutex

// debugOnly logs every record at debug level.
type debugOnly struct{ h slog.Handler }

func (d debugOnly) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.h.Enabled(ctx, slog.LevelDebug)
}
func (d debugOnly) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return d.h.Handle(ctx, r)
}
func (d debugOnly) WithAttrs(a []slog.Attr) slog.Handler { return debugOnly{d.h.WithAttrs(a)} }
func (d debugOnly) WithGroup(g string) slog.Handler      { return debugOnly{d.h.WithGroup(g)} }

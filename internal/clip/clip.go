package clip

import (
	"context"
	"log/slog"
	"strconv"
	"unicode/utf8"
)

// Lengths in bytes: Name for names (users, tools, env names, subsystems,
// hosts, client versions), Command for command lines, Attr for any string
// attribute of a log record (Handler).
const (
	Name    = 256
	Command = 4096
	Attr    = 8192
)

// String returns s unchanged when it is at most max bytes, otherwise its
// first max bytes (cut at a UTF-8 boundary) followed by
// "…(cut, N bytes)" where N is len(s).
func String(s string, max int) string {
	if len(s) <= max {
		return s
	}
	n := max
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…(cut, " + strconv.Itoa(len(s)) + " bytes)"
}

// Handler wraps h so that every string attribute (and every error's
// text) of a record is cut to max bytes, and so is the message.
func Handler(h slog.Handler, max int) slog.Handler { return &handler{h: h, max: max} }

type handler struct {
	h   slog.Handler
	max int
}

func (c *handler) Enabled(ctx context.Context, l slog.Level) bool { return c.h.Enabled(ctx, l) }

func (c *handler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, String(r.Message, c.max), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(c.attr(a))
		return true
	})
	return c.h.Handle(ctx, nr)
}

func (c *handler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = c.attr(a)
	}
	return &handler{h: c.h.WithAttrs(out), max: c.max}
}

func (c *handler) WithGroup(name string) slog.Handler {
	return &handler{h: c.h.WithGroup(name), max: c.max}
}

func (c *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); len(s) > c.max {
			return slog.String(a.Key, String(s, c.max))
		}
	case slog.KindGroup:
		g := v.Group()
		out := make([]any, len(g))
		for i, ga := range g {
			out[i] = c.attr(ga)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			if s := x.Error(); len(s) > c.max {
				return slog.String(a.Key, String(s, c.max))
			}
		case interface{ String() string }:
			if s := x.String(); len(s) > c.max {
				return slog.String(a.Key, String(s, c.max))
			}
		}
	}
	return a
}

package config

import (
	"testing"
	"time"
)

func TestSharedValidators(t *testing.T) {
	tests := []struct {
		check func(p *Problems)
		want  string // "" for no problem
	}{
		{func(p *Problems) { Positive(p, "a.b", time.Duration(0)) }, "a.b: must be positive, not 0s"},
		{func(p *Problems) { Positive(p, "a.b", -1.5) }, "a.b: must be positive, not -1.5"},
		{func(p *Problems) { Positive(p, "a.b", int64(1)) }, ""},
		{func(p *Problems) { NonNegative(p, "a.b", -time.Second) }, "a.b: must not be negative, not -1s"},
		{func(p *Problems) { NonNegative(p, "a.b", 0) }, ""},
		{func(p *Problems) { AtLeast(p, "a.b", 0, 1) }, "a.b: must be at least 1, not 0"},
		{func(p *Problems) { AtLeast(p, "a.b", 1, 1) }, ""},
	}
	for i, tt := range tests {
		var p Problems
		tt.check(&p)
		got := ""
		if err := p.Err(); err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("%d: got %q, want %q", i, got, tt.want)
		}
	}
}

func TestIsDNSLabel(t *testing.T) {
	for s, want := range map[string]bool{
		"tools": true, "a-1": true, "-a": false, "a-": false, "A": false, "a.b": false, "": false,
		string(make([]byte, 64)): false,
	} {
		if got := isDNSLabel(s); got != want {
			t.Errorf("isDNSLabel(%q) = %v, want %v", s, got, want)
		}
	}
}

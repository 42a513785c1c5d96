package config

import (
	"strings"
	"testing"
	"time"
)

func TestLimitsKeys(t *testing.T) {
	t.Parallel()
	base := "ssh:\n  host_keys: [/k]\ndirectory:\n  file: /u\n"
	tests := []struct {
		name  string
		yaml  string
		check func(Limits) bool
		wants []string
	}{
		{"defaults", "", func(l Limits) bool {
			return l.MaxStartups == (Startups{50, 30, 100}) && l.PerSourceMaxStartups == 10 && l.Penalties.Enabled &&
				l.Penalties.AuthFailure == 5*time.Second && l.MaxEnvVars == 64
		}, nil},
		{"one number", "limits:\n  max_startups: 20\n", func(l Limits) bool { return l.MaxStartups == (Startups{20, 100, 20}) }, nil},
		{"start:rate:full", "limits:\n  max_startups: \"10:30:60\"\n", func(l Limits) bool { return l.MaxStartups == (Startups{10, 30, 60}) }, nil},
		{"penalties", "limits:\n  penalties:\n    exempt: [10.0.0.0/8, \"2001:db8::1\"]\n    max: 1m\n", func(l Limits) bool {
			p, err := l.Penalties.ExemptPrefixes()
			return err == nil && len(p) == 2 && p[1].Bits() == 128 && l.Penalties.Max == time.Minute
		}, nil},
		{"bad values", `limits:
  max_startups: "60:30:50"
  per_source_max_startups: 0
  max_env_vars: 0
  max_env_bytes: -1
  penalties:
    min: 20m
    max: 10m
    no_auth: -1s
    max_sources: 0
    exempt: [10.0.0.0/33, nonsense]
`, nil, []string{
			"limits.max_startups: start must be from 1 to full (50), not 60",
			"limits.per_source_max_startups: must be at least 1, not 0",
			"limits.max_env_vars: must be at least 1",
			"limits.max_env_bytes: must be at least 1",
			"limits.penalties.min: must be less than max (10m0s), not 20m0s",
			"limits.penalties.no_auth: must not be negative",
			"limits.penalties.max_sources: must be at least 1",
			"limits.penalties.exempt[0]: want an address or CIDR",
			"limits.penalties.exempt[1]: want an address or CIDR",
		}},
		{"rate", "limits:\n  max_startups: \"10:130:60\"\n", nil, []string{"limits.max_startups: rate must be a percentage"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(base + tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = cfg.Validate()
			if tt.wants == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if !tt.check(cfg.Limits) {
					t.Fatalf("limits: %+v", cfg.Limits)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: no error")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
		})
	}
	if _, err := Parse([]byte(base + "limits:\n  max_startups: 10:x\n")); err == nil || !strings.Contains(err.Error(), "max_startups: want N or start:rate:full") {
		t.Errorf("bad max_startups: %v", err)
	}
}

package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Startups is OpenSSH's MaxStartups "start:rate:full": with Begin or more
// unauthenticated connections open, a new one is dropped with a
// probability that grows linearly from Rate percent to 100 % at Full.
// One number N means N:100:N (refuse at N, no early drop).
type Startups struct {
	Begin, Rate, Full int
}

// UnmarshalYAML accepts 100 or "10:30:100".
func (s *Startups) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseStartups(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: max_startups: %w", n.Line, err)
	}
	*s = v
	return nil
}

// MarshalYAML writes the "start:rate:full" form.
func (s Startups) MarshalYAML() (any, error) { return s.String(), nil }

func (s Startups) String() string { return fmt.Sprintf("%d:%d:%d", s.Begin, s.Rate, s.Full) }

// ParseStartups parses "N" or "start:rate:full".
func ParseStartups(v string) (Startups, error) {
	parts := strings.Split(strings.TrimSpace(v), ":")
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return Startups{}, fmt.Errorf("want N or start:rate:full (e.g. 50:30:100), not %q", v)
		}
		nums[i] = n
	}
	switch len(nums) {
	case 1:
		return Startups{Begin: nums[0], Rate: 100, Full: nums[0]}, nil
	case 3:
		return Startups{Begin: nums[0], Rate: nums[1], Full: nums[2]}, nil
	}
	return Startups{}, fmt.Errorf("want N or start:rate:full (e.g. 50:30:100), not %q", v)
}

func (s Startups) validate(p *Problems, path string) {
	switch {
	case s.Full < 1:
		p.Addf(path, "full (the last number) must be at least 1, not %d", s.Full)
	case s.Begin < 1 || s.Begin > s.Full:
		p.Addf(path, "start must be from 1 to full (%d), not %d", s.Full, s.Begin)
	case s.Rate < 0 || s.Rate > 100:
		p.Addf(path, "rate must be a percentage from 0 to 100, not %d", s.Rate)
	}
}

// Penalties are OpenSSH 9.8's PerSourcePenalties: each misbehaviour of a
// source adds time to its penalty; once more than Min is outstanding the
// source's new connections are refused until it runs out. A penalty never
// exceeds Max.
type Penalties struct {
	// Enabled turns penalties on (default true).
	Enabled bool `yaml:"enabled"`
	// AuthFailure: a connection that tried to authenticate and ended
	// without logging in (wrong keys, unknown or invalid user).
	AuthFailure time.Duration `yaml:"auth_failure"`
	// NoAuth: a connection that ended without trying to authenticate.
	NoAuth time.Duration `yaml:"no_auth"`
	// GraceExceeded: a connection cut by login_grace_time.
	GraceExceeded time.Duration `yaml:"grace_exceeded"`
	// ProtocolError: a connection that sent something that is not SSH.
	ProtocolError time.Duration `yaml:"protocol_error"`
	// Min is the penalty a source must accumulate before it is refused.
	Min time.Duration `yaml:"min"`
	// Max caps a source's penalty.
	Max time.Duration `yaml:"max"`
	// MaxSources caps the number of penalised addresses remembered;
	// when it is reached new ones are not penalised (and it is logged).
	MaxSources int `yaml:"max_sources"`
	// Exempt are CIDRs (or single addresses) never penalised: NAT
	// gateways, monitoring, load balancer health checks.
	Exempt []string `yaml:"exempt"`
}

func defaultPenalties() Penalties {
	return Penalties{
		Enabled:       true,
		AuthFailure:   5 * time.Second,
		NoAuth:        time.Second,
		GraceExceeded: 10 * time.Second,
		ProtocolError: 5 * time.Second,
		Min:           15 * time.Second,
		Max:           10 * time.Minute,
		MaxSources:    65536,
	}
}

// ExemptPrefixes parses Exempt; call after Validate.
func (pe Penalties) ExemptPrefixes() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(pe.Exempt))
	for i, e := range pe.Exempt {
		pf, err := parsePrefix(e)
		if err != nil {
			return nil, fmt.Errorf("exempt[%d]: %w", i, err)
		}
		out = append(out, pf)
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("want an address or CIDR (10.0.0.0/8, 2001:db8::/32), not %q", s)
		}
		return pf.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("want an address or CIDR (10.0.0.0/8, 2001:db8::/32), not %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (pe *Penalties) validate(p *Problems, path string) {
	for _, f := range []struct {
		key string
		d   time.Duration
	}{{"auth_failure", pe.AuthFailure}, {"no_auth", pe.NoAuth}, {"grace_exceeded", pe.GraceExceeded},
		{"protocol_error", pe.ProtocolError}, {"min", pe.Min}} {
		NonNegative(p, path+"."+f.key, f.d)
	}
	if pe.Max <= 0 {
		p.Addf(path+".max", "must be positive, not %s", pe.Max)
	} else if pe.Min >= pe.Max {
		p.Addf(path+".min", "must be less than max (%s), not %s", pe.Max, pe.Min)
	}
	AtLeast(p, path+".max_sources", pe.MaxSources, 1)
	for i, e := range pe.Exempt {
		if _, err := parsePrefix(e); err != nil {
			p.Addf(path+".exempt["+strconv.Itoa(i)+"]", "%s", err)
		}
	}
}

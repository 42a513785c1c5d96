package config

import (
	"fmt"

	"net/netip"
	"path"
	"strconv"
	"strings"
)

// Forwarding is what clients may forward: the forwarding.allow list for
// `ssh -L` (direct-tcpip) destinations, its syntax and validation
// (internal/forwardpolicy's Policy evaluates it), and the switches for
// agent forwarding (ssh -A) and remote forwarding (ssh -R).
type Forwarding struct {
	// Allow lists destination patterns "HOST:PORTS". HOST is an IP, a CIDR
	// (10.0.0.0/8), a host name or a glob of one (*.db.example.org), or
	// [v6]/[v6-cidr]; PORTS is *, a number, or a range 5432-5439.
	// An empty list refuses every forward.
	Allow []string `yaml:"allow"`
	// Agent allows agent forwarding (ssh -A) for keys and certificates
	// that do not forbid it; OpenSSH's AllowAgentForwarding.
	Agent bool `yaml:"agent"`
	// Remote allows remote forwarding (ssh -R) onto the account's own
	// loopback, for keys and certificates that do not forbid it;
	// OpenSSH's AllowTcpForwarding remote, with GatewayPorts no.
	Remote bool `yaml:"remote"`
}

func defaultForwarding() Forwarding {
	return Forwarding{Allow: []string{"127.0.0.0/8:*", "[::1]:*", "localhost:*"}, Agent: true, Remote: true}
}

func (f *Forwarding) validate(p *Problems, key string) {
	for i, s := range f.Allow {
		if _, err := ParseForwardRule(s); err != nil {
			p.Addf(fmt.Sprintf("%s.allow[%d]", key, i), "%v", err)
		}
	}
}

// Rules parses Allow; call Validate first.
func (f *Forwarding) Rules() ([]ForwardRule, error) {
	rules := make([]ForwardRule, 0, len(f.Allow))
	for _, s := range f.Allow {
		r, err := ParseForwardRule(s)
		if err != nil {
			return nil, err
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// ForwardRule is one parsed Allow entry.
type ForwardRule struct {
	Prefix   netip.Prefix // valid when the host is an IP or a CIDR
	HostGlob string       // otherwise, a lower-case host name glob
	PortLo   uint16
	PortHi   uint16
}

// ParseForwardRule parses "HOST:PORTS".
func ParseForwardRule(s string) (ForwardRule, error) {
	var r ForwardRule
	host, ports, err := splitRule(s)
	if err != nil {
		return r, err
	}
	switch {
	case ports == "*":
		r.PortLo, r.PortHi = 1, 65535
	case strings.Contains(ports, "-"):
		lo, hi, _ := strings.Cut(ports, "-")
		l, err1 := parsePort(lo)
		h, err2 := parsePort(hi)
		if err1 != nil || err2 != nil || l > h {
			return r, fmt.Errorf("bad port range %q in %q (want e.g. 5432-5439)", ports, s)
		}
		r.PortLo, r.PortHi = l, h
	default:
		n, err := parsePort(ports)
		if err != nil {
			return r, fmt.Errorf("bad port %q in %q (want *, a number or a range)", ports, s)
		}
		r.PortLo, r.PortHi = n, n
	}
	if pfx, err := netip.ParsePrefix(host); err == nil {
		r.Prefix = pfx.Masked()
		return r, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		r.Prefix = netip.PrefixFrom(ip, ip.BitLen())
		return r, nil
	}
	if strings.Contains(host, "/") {
		return r, fmt.Errorf("bad CIDR %q in %q", host, s)
	}
	h := strings.ToLower(host)
	if _, err := path.Match(h, "x"); err != nil || h == "" {
		return r, fmt.Errorf("bad host pattern %q in %q", host, s)
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '*' || c == '_') {
			return r, fmt.Errorf("bad character %q in host pattern %q", c, host)
		}
	}
	r.HostGlob = h
	return r, nil
}

func splitRule(s string) (host, ports string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 || end+1 >= len(s) || s[end+1] != ':' {
			return "", "", fmt.Errorf("bad pattern %q: want [IPv6]:PORTS", s)
		}
		return s[1:end], s[end+2:], nil
	}
	i := strings.LastIndex(s, ":")
	if i <= 0 || i == len(s)-1 {
		return "", "", fmt.Errorf("bad pattern %q: want HOST:PORTS, e.g. 127.0.0.1:* or db.example.org:5432", s)
	}
	return s[:i], s[i+1:], nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}

// MatchPort reports whether port is in the rule's range.
func (r ForwardRule) MatchPort(port uint16) bool { return port >= r.PortLo && port <= r.PortHi }

// MatchIP reports whether ip is in the rule's prefix.
func (r ForwardRule) MatchIP(ip netip.Addr) bool {
	return r.Prefix.IsValid() && r.Prefix.Contains(ip.Unmap())
}

// MatchName reports whether a host name matches the rule's glob.
func (r ForwardRule) MatchName(host string) bool {
	if r.HostGlob == "" {
		return false
	}
	ok, _ := path.Match(r.HostGlob, strings.ToLower(strings.TrimSuffix(host, ".")))
	return ok
}

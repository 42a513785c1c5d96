package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// matchFrom reports whether addr satisfies an authorized_keys from="..."
// list, as OpenSSH's match_host_and_ip with UseDNS no (the default; the
// client's "host name" is then its address): entries are CIDR blocks,
// addresses or wildcard patterns (* and ?), separated by commas; an entry
// starting with ! that matches refuses, whatever else matches.
func matchFrom(addr netip.Addr, list string) (bool, error) {
	if !addr.IsValid() {
		return false, nil
	}
	addr = addr.Unmap()
	ip := addr.String()
	positive := false
	for _, e := range strings.Split(list, ",") {
		neg := strings.HasPrefix(e, "!")
		if neg {
			e = e[1:]
		}
		if e == "" {
			return false, errors.New("empty entry")
		}
		p, isCIDR, err := parseCIDR(e)
		if err != nil {
			return false, err
		}
		var m bool
		if isCIDR {
			m = p.Contains(addr)
		} else {
			// A wildcard pattern, matched against the address (and, as
			// the host name, its lower-case form: the same string).
			m = matchPattern(ip, strings.ToLower(e)) || matchPattern(ip, e)
		}
		if m {
			if neg {
				return false, nil
			}
			positive = true
		}
	}
	return positive, nil
}

// checkFromList validates a from= list without matching.
func checkFromList(list string) error {
	_, err := matchFrom(netip.IPv4Unspecified(), list)
	return err
}

// parseCIDR reads an address or CIDR block as OpenSSH's addr_pton_cidr:
// isCIDR false means "not an address, treat as a pattern"; an error is a
// block with bits set past its mask, which OpenSSH refuses.
func parseCIDR(s string) (netip.Prefix, bool, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, false, nil
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr()))
		if p.Masked() != p {
			return netip.Prefix{}, false, fmt.Errorf("inconsistent mask length for network %q", clip(s, 64))
		}
		return p, true, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, false, nil
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true, nil
}

func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// matchCIDRList reports whether addr is in a certificate's
// source-address list: CIDR blocks or addresses only, no negation, no
// patterns (OpenSSH's addr_match_cidr_list).
func matchCIDRList(addr netip.Addr, list string) (bool, error) {
	addr = addr.Unmap()
	found := false
	for _, e := range strings.Split(list, ",") {
		if e == "" {
			return false, errors.New("empty entry in source-address")
		}
		if len(e) > 46+3 || strings.Trim(e, "0123456789abcdefABCDEF.:/") != "" {
			return false, fmt.Errorf("invalid source-address entry %q", clip(e, 64))
		}
		p, ok, err := parseCIDR(e)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, fmt.Errorf("invalid source-address entry %q", clip(e, 64))
		}
		if addr.IsValid() && p.Contains(addr) {
			found = true
		}
	}
	return found, nil
}

// matchPattern is OpenSSH's match_pattern: * matches any run of
// characters, ? any one character, everything else itself.
func matchPattern(s, pattern string) bool {
	// Iterative glob with one backtrack point: linear in practice and
	// never exponential.
	si, pi := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(pattern) && (pattern[pi] == '?' || pattern[pi] == s[si]):
			si++
			pi++
		case pi < len(pattern) && pattern[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

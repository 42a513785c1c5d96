package forwardpolicy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/bastion-ssh/bastion/config"
)

// ClusterNames is a backend that reaches names inside its own platform
// (kube: Services and pods, NAME or NAME.NAMESPACE[.svc[.DOMAIN]]) and
// applies its own policy to them (the account's own namespaces): for
// those, the backend's Dial decides and forwarding.allow is not
// consulted. Every other destination is checked against forwarding.allow.
type ClusterNames interface {
	InCluster(host string) bool
}

// KeyRestrictions is what the login's key allows (auth.Restrictions:
// no-port-forwarding, permitopen).
type KeyRestrictions interface {
	AllowsOpen(host string, port uint32) error
}

// resolveTimeout bounds resolving a host name matched only by an IP rule.
const resolveTimeout = 5 * time.Second

// Policy decides who may forward where. The zero Policy refuses every
// forward that is not the backend's own.
type Policy struct {
	rules   []config.ForwardRule
	cluster ClusterNames // nil: the backend claims no destinations
}

// New builds the policy from forwarding.allow; backend is consulted for
// the destinations it claims when it implements ClusterNames.
func New(f config.Forwarding, backend any) (*Policy, error) {
	rules, err := f.Rules()
	if err != nil {
		return nil, err
	}
	cn, _ := backend.(ClusterNames)
	return &Policy{rules: rules, cluster: cn}, nil
}

// Check decides whether a login whose key allows key may forward to
// host:port. It returns the address to dial, or an error saying why not
// (fit for the user and the audit log).
func (p *Policy) Check(ctx context.Context, key KeyRestrictions, host string, port uint32) (string, error) {
	if key != nil {
		if err := key.AllowsOpen(host, port); err != nil {
			return "", err
		}
	}
	if p.cluster != nil && p.cluster.InCluster(host) {
		return net.JoinHostPort(host, strconv.Itoa(int(port))), nil
	}
	return p.allowed(ctx, host, port)
}

// allowed applies forwarding.allow and returns the address to dial. Host
// names matched only by an IP rule are resolved here, and the resolved,
// checked address is dialled (no second lookup to race).
func (p *Policy) allowed(ctx context.Context, host string, port uint32) (string, error) {
	if port == 0 || port > 65535 {
		return "", fmt.Errorf("port %d is out of range", port)
	}
	pt := uint16(port)
	if len(p.rules) == 0 {
		return "", errors.New("port forwarding is disabled on this server")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if p.matchIP(pt, ip) {
			return net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(int(pt))), nil
		}
		return "", errors.New("destination not in the allow list (forwarding.allow)")
	}
	hasIPRule := false
	for _, r := range p.rules {
		if r.MatchPort(pt) && r.MatchName(host) {
			return net.JoinHostPort(host, strconv.Itoa(int(pt))), nil
		}
		if r.Prefix.IsValid() && r.MatchPort(pt) {
			hasIPRule = true
		}
	}
	if !hasIPRule {
		return "", errors.New("destination not in the allow list (forwarding.allow)")
	}
	rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("cannot resolve %s", host)
	}
	for _, ip := range ips {
		if !p.matchIP(pt, ip) {
			return "", fmt.Errorf("%s resolves to %s, which is not in the allow list", host, ip)
		}
	}
	return net.JoinHostPort(ips[0].Unmap().String(), strconv.Itoa(int(pt))), nil
}

func (p *Policy) matchIP(port uint16, ip netip.Addr) bool {
	for _, r := range p.rules {
		if r.MatchPort(port) && r.MatchIP(ip) {
			return true
		}
	}
	return false
}

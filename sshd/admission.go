package sshd

import (
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/ops"
)

// Pre-authentication admission, after OpenSSH's sshd.c and srclimit.c:
// a penalised source is refused; then the unauthenticated connections are
// capped in total (max_startups, with random early drop between start
// and full) and per source (per_source_max_startups), separately from
// the cap on all of a source's connections (max_conns_per_source), which
// must stay high because many users may share one NAT address.

// Reasons a connection is refused before authentication: the values of
// the reason label of bastion_connections_rejected_total.
const (
	refuseDraining        = "shutting_down"
	refusePenalty         = "penalty"
	refuseStartupsFull    = "max_startups"
	refuseStartupsRandom  = "max_startups_random"
	refusePerSourceUnauth = "per_source_max_startups"
	refusePerSource       = "max_conns_per_source"
)

// Penalty reasons: what a source did, the reason label of
// bastion_penalties_total.
const (
	penaltyAuthFailure   = "auth_failure"
	penaltyNoAuth        = "no_auth"
	penaltyGraceExceeded = "grace_exceeded"
	penaltyProtocolError = "protocol_error"
)

// refusedBanner is what a refused client reads before the connection is
// closed (OpenSSH's text; a client prints it as the reason).
const refusedBanner = "Not allowed at this time\r\n"

// earlyDrop is OpenSSH's should_drop_connection: no drop below Begin,
// always at Full, in between a probability rising linearly from Rate %.
func earlyDrop(unauth int, st config.Startups, roll func(n int) int) bool {
	if unauth < st.Begin {
		return false
	}
	if unauth >= st.Full || st.Rate >= 100 {
		return true
	}
	p := 100 - st.Rate
	p *= unauth - st.Begin
	p /= st.Full - st.Begin
	p += st.Rate
	return roll(100) < p
}

func rollPercent(n int) int { return rand.IntN(n) }

// penaltyBox remembers penalised sources. It is guarded by Server.mu.
type penaltyBox struct {
	m         map[netip.Addr]*penalty
	lastPrune time.Time
	full      bool // MaxSources reached (logged once per episode)
}

type penalty struct {
	expiry time.Time
	active bool
	reason string
}

func exempt(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// refused reports whether src has an active penalty, and why.
func (pb *penaltyBox) refused(cfg config.Penalties, ex []netip.Prefix, src netip.Addr, now time.Time) (string, bool) {
	pb.prune(now, false)
	if !cfg.Enabled || exempt(ex, src) {
		return "", false
	}
	p := pb.m[src]
	if p == nil || !p.active || now.After(p.expiry) {
		return "", false
	}
	return p.reason, true
}

// add adds d of penalty to src for reason. It reports whether the
// penalty became active with this call and how long it now lasts.
func (pb *penaltyBox) add(cfg config.Penalties, ex []netip.Prefix, src netip.Addr, reason string, d time.Duration, now time.Time) (activated bool, left time.Duration, ok bool) {
	if !cfg.Enabled || d <= 0 || !src.IsValid() || exempt(ex, src) {
		return false, 0, false
	}
	ops.Penalties.WithLabelValues(reason).Inc()
	if pb.m == nil {
		pb.m = make(map[netip.Addr]*penalty)
	}
	p := pb.m[src]
	if p == nil || now.After(p.expiry) {
		if p == nil && len(pb.m) >= cfg.MaxSources {
			pb.prune(now, true)
			if len(pb.m) >= cfg.MaxSources {
				pb.full = true
				return false, 0, false
			}
		}
		p = &penalty{expiry: now}
		pb.m[src] = p
	}
	p.expiry = p.expiry.Add(d)
	if left = p.expiry.Sub(now); left > cfg.Max {
		p.expiry, left = now.Add(cfg.Max), cfg.Max
	}
	p.reason = reason
	if !p.active && left > cfg.Min {
		p.active, activated = true, true
		pb.prune(now, true) // update the gauge
	}
	return activated, left, true
}

// prune drops expired penalties and sets the gauge, at most once a
// second unless forced.
func (pb *penaltyBox) prune(now time.Time, force bool) {
	if !force && now.Sub(pb.lastPrune) < time.Second {
		return
	}
	pb.lastPrune = now
	active := 0
	for a, p := range pb.m {
		switch {
		case now.After(p.expiry):
			delete(pb.m, a)
		case p.active:
			active++
		}
	}
	pb.full = false
	ops.PenalisedSources.WithLabelValues().Set(float64(active))
}

package auth

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Restrictions are what a login may do, decided at authentication from
// the key's authorized_keys options, or a certificate's options and
// extensions, or both (OpenSSH's sshauthopt_merge). sshd enforces them in
// every channel. The zero value restricts nothing.
type Restrictions struct {
	// ForceCommand, when HasForceCommand, replaces every command: shell,
	// exec, scp, rsync, become and the sftp subsystem. The client's
	// command goes into SSH_ORIGINAL_COMMAND.
	ForceCommand    string
	HasForceCommand bool
	NoPTY           bool
	// NoPortForwarding refuses ssh -L/-W and -R.
	NoPortForwarding  bool
	NoAgentForwarding bool
	NoX11Forwarding   bool
	NoUserRC          bool
	// PermitOpen, when not nil, lists the only host:port destinations
	// ssh -L may open (forwarding.allow still applies as well).
	PermitOpen []string
	// PermitListen, when not nil, lists the only [host:]port listens
	// ssh -R may ask for (permitlisten="...").
	PermitListen []string
	// ExpiresAt is when the key or certificate stops being valid
	// (checked at authentication); zero: never.
	ExpiresAt time.Time
	// From and SourceAddress are the address restrictions that were
	// checked at authentication (for the audit log).
	From          string
	SourceAddress string
	// IgnoredEnvironment counts environment="..." options not applied.
	IgnoredEnvironment int
}

// fromKeyOptions is what an authorized_keys line allows.
func fromKeyOptions(o KeyOptions) Restrictions {
	return Restrictions{
		ForceCommand: o.Command, HasForceCommand: o.HasCommand,
		NoPTY: o.NoPTY, NoPortForwarding: o.NoPortForwarding, NoAgentForwarding: o.NoAgentForwarding,
		NoX11Forwarding: o.NoX11Forwarding, NoUserRC: o.NoUserRC,
		PermitOpen: o.PermitOpen, PermitListen: o.PermitListen, ExpiresAt: o.ExpiryTime, From: o.From,
		IgnoredEnvironment: len(o.Environment),
	}
}

// merge combines the restrictions of a cert-authority line (r) with
// those of a certificate (c) as OpenSSH's sshauthopt_merge: a permission
// must be granted by both, the earliest expiry wins, lists of the line
// take precedence, and two different forced commands refuse the login.
func (r Restrictions) merge(c Restrictions) (Restrictions, error) {
	m := Restrictions{
		NoPTY:              r.NoPTY || c.NoPTY,
		NoPortForwarding:   r.NoPortForwarding || c.NoPortForwarding,
		NoAgentForwarding:  r.NoAgentForwarding || c.NoAgentForwarding,
		NoX11Forwarding:    r.NoX11Forwarding || c.NoX11Forwarding,
		NoUserRC:           r.NoUserRC || c.NoUserRC,
		PermitOpen:         r.PermitOpen,
		PermitListen:       r.PermitListen,
		From:               r.From,
		SourceAddress:      c.SourceAddress,
		IgnoredEnvironment: r.IgnoredEnvironment,
		ExpiresAt:          r.ExpiresAt,
	}
	if m.PermitOpen == nil {
		m.PermitOpen = c.PermitOpen
	}
	if m.PermitListen == nil {
		m.PermitListen = c.PermitListen
	}
	if !c.ExpiresAt.IsZero() && (m.ExpiresAt.IsZero() || c.ExpiresAt.Before(m.ExpiresAt)) {
		m.ExpiresAt = c.ExpiresAt
	}
	switch {
	case r.HasForceCommand && c.HasForceCommand:
		if r.ForceCommand != c.ForceCommand {
			return m, errors.New("forced commands of the key and the certificate differ")
		}
		m.ForceCommand, m.HasForceCommand = r.ForceCommand, true
	case r.HasForceCommand:
		m.ForceCommand, m.HasForceCommand = r.ForceCommand, true
	case c.HasForceCommand:
		m.ForceCommand, m.HasForceCommand = c.ForceCommand, true
	}
	return m, nil
}

// Summary lists the restrictions that apply, in a stable order, for the
// audit log ("command", "no-pty", "permitopen=db:5432", ...). Empty: none.
func (r Restrictions) Summary() []string {
	var s []string
	if r.HasForceCommand {
		s = append(s, "command")
	}
	if !r.ExpiresAt.IsZero() {
		s = append(s, "expiry-time="+r.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if r.From != "" {
		s = append(s, "from="+clip(r.From, 200))
	}
	if r.SourceAddress != "" {
		s = append(s, "source-address="+clip(r.SourceAddress, 200))
	}
	if r.NoAgentForwarding {
		s = append(s, "no-agent-forwarding")
	}
	if r.NoPortForwarding {
		s = append(s, "no-port-forwarding")
	}
	if r.NoPTY {
		s = append(s, "no-pty")
	}
	if r.NoUserRC {
		s = append(s, "no-user-rc")
	}
	if r.NoX11Forwarding {
		s = append(s, "no-x11-forwarding")
	}
	if r.PermitOpen != nil {
		p := append([]string(nil), r.PermitOpen...)
		sort.Strings(p)
		if len(p) > 16 {
			p = append(p[:16], fmt.Sprintf("(%d more)", len(r.PermitOpen)-16))
		}
		for _, x := range p {
			s = append(s, "permitopen="+clip(x, 200))
		}
	}
	if r.PermitListen != nil {
		p := append([]string(nil), r.PermitListen...)
		sort.Strings(p)
		if len(p) > 16 {
			p = append(p[:16], fmt.Sprintf("(%d more)", len(r.PermitListen)-16))
		}
		for _, x := range p {
			s = append(s, "permitlisten="+clip(x, 200))
		}
	}
	if r.IgnoredEnvironment > 0 {
		s = append(s, "environment-ignored")
	}
	return s
}

// AllowsOpen reports whether ssh -L to host:port is allowed by the
// restrictions. internal/forwardpolicy's Policy applies it before the
// server's forwarding.allow.
func (r Restrictions) AllowsOpen(host string, port uint32) error {
	if r.NoPortForwarding {
		return errors.New("port forwarding is disabled for this key (no-port-forwarding)")
	}
	if !PermitOpenAllows(r.PermitOpen, host, port) {
		return errors.New("destination not in this key's permitopen list")
	}
	return nil
}

// AllowsListen reports whether ssh -R may listen on host:port (port 0:
// one allocated by the server), with OpenSSH's permitlisten rule: an
// entry's host as written (or "*") and its port equal (or "*"; only "*"
// allows an allocated port).
func (r Restrictions) AllowsListen(host string, port uint32) error {
	if r.NoPortForwarding {
		return errors.New("port forwarding is disabled for this key (no-port-forwarding)")
	}
	if !PermitOpenAllows(r.PermitListen, host, port) {
		return errors.New("listen address not in this key's permitlisten list")
	}
	return nil
}

// AllowsAgent reports whether agent forwarding is allowed.
func (r Restrictions) AllowsAgent() error {
	if r.NoAgentForwarding {
		return errors.New("agent forwarding is disabled for this key (no-agent-forwarding)")
	}
	return nil
}

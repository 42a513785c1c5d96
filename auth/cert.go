package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"
)

// CertPrincipal decides whether a user certificate listing certPrincipals
// may log in as login, and returns the principal that allows it.
// authorized is the principals="..." list of the cert-authority line that
// trusts the certificate's CA; nil (a CA of ssh.trusted_user_ca_keys, or a
// line without principals=) means the principal must be the person's
// name: a certificate for alice serves "alice" and "alice+TOOL" (whether
// alice may act as TOOL is decided separately, by ActAs). A certificate
// without principals serves nobody.
func CertPrincipal(certPrincipals []string, login Login, authorized []string) (string, error) {
	if err := ValidName(login.User); err != nil {
		return "", fmt.Errorf("login name: %w", err)
	}
	if len(certPrincipals) == 0 {
		return "", errors.New("certificate lacks a principal list")
	}
	if authorized == nil {
		if slices.Contains(certPrincipals, login.User) {
			return login.User, nil
		}
		return "", fmt.Errorf("certificate is not for %s", login.User)
	}
	for _, p := range certPrincipals {
		if p != "" && slices.Contains(authorized, p) {
			return p, nil
		}
	}
	return "", errors.New("no certificate principal is in the key's principals list")
}

// Certificate critical options and extensions bastion understands.
const (
	critForceCommand  = "force-command"
	critSourceAddress = "source-address"
)

// certRestrictions reads a user certificate's critical options and
// extensions as OpenSSH's sshauthopt_from_cert: every permission is off
// unless an extension grants it (permit-pty, permit-port-forwarding,
// permit-agent-forwarding, permit-X11-forwarding, permit-user-rc); an
// unknown extension is ignored; an unknown critical option refuses the
// certificate.
func certRestrictions(c *ssh.Certificate) (Restrictions, error) {
	r := Restrictions{NoPTY: true, NoPortForwarding: true, NoAgentForwarding: true, NoX11Forwarding: true, NoUserRC: true}
	for name, v := range c.Permissions.CriticalOptions {
		switch name {
		case critForceCommand:
			r.ForceCommand, r.HasForceCommand = v, true
		case critSourceAddress:
			if _, err := matchCIDRList(netip.Addr{}, v); err != nil {
				return r, fmt.Errorf("certificate source-address: %w", err)
			}
			r.SourceAddress = v
		default:
			return r, fmt.Errorf("certificate critical option %q is not supported", clip(name, 64))
		}
	}
	for name := range c.Permissions.Extensions {
		switch name {
		case "permit-pty":
			r.NoPTY = false
		case "permit-port-forwarding":
			r.NoPortForwarding = false
		case "permit-agent-forwarding":
			r.NoAgentForwarding = false
		case "permit-X11-forwarding":
			r.NoX11Forwarding = false
		case "permit-user-rc":
			r.NoUserRC = false
		}
	}
	if c.ValidBefore != ssh.CertTimeInfinity && c.ValidBefore < 1<<63 {
		r.ExpiresAt = time.Unix(int64(c.ValidBefore), 0)
	}
	return r, nil
}

// checkCertValidity checks the type, validity window and CA signature of
// a user certificate.
func checkCertValidity(c *ssh.Certificate, now time.Time) error {
	if c.CertType != ssh.UserCert {
		return errors.New("not a user certificate")
	}
	unix := now.Unix()
	if c.ValidAfter >= 1<<63 || unix < int64(c.ValidAfter) {
		return fmt.Errorf("certificate is not valid yet (valid after %s)", certTime(c.ValidAfter))
	}
	if c.ValidBefore != ssh.CertTimeInfinity && (c.ValidBefore >= 1<<63 || unix >= int64(c.ValidBefore)) {
		return fmt.Errorf("certificate expired at %s", certTime(c.ValidBefore))
	}
	// CheckCert verifies the CA's signature; the principal and the
	// options are checked by us (above and in certRestrictions), so ask
	// it with the certificate's own first principal and every critical
	// option it has.
	chk := &ssh.CertChecker{SupportedCriticalOptions: []string{critForceCommand, critSourceAddress}, Clock: func() time.Time { return now }}
	var opts []string
	for k := range c.Permissions.CriticalOptions {
		opts = append(opts, k)
	}
	chk.SupportedCriticalOptions = append(chk.SupportedCriticalOptions, opts...)
	p := ""
	if len(c.ValidPrincipals) > 0 {
		p = c.ValidPrincipals[0]
	}
	if err := chk.CheckCert(p, c); err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	return nil
}

func certTime(t uint64) string {
	if t >= 1<<63 {
		return "forever"
	}
	return time.Unix(int64(t), 0).UTC().Format(time.RFC3339)
}

package auth

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/crypto/ssh"
)

// Trust is what the server trusts besides each person's own keys: the
// user certificate authorities of ssh.trusted_user_ca_keys and the
// revocations of ssh.revoked_keys. The zero value trusts no CA and
// revokes nothing. It is immutable once built; a reload builds a new one.
type Trust struct {
	// CAs sign user certificates that are valid for the person named in
	// a principal (OpenSSH's TrustedUserCAKeys).
	CAs []AuthorizedKey
	// Revoked may be nil.
	Revoked *Revocations
}

// LoadCAKeys reads a file of CA public keys, one per line (blank lines
// and # comments ignored), as OpenSSH's TrustedUserCAKeys.
func LoadCAKeys(path string) ([]AuthorizedKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cas []AuthorizedKey
	err = eachKeyLine(data, func(n int, line string) error {
		k, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if len(opts) > 0 {
			return fmt.Errorf("%s:%d: options are not allowed on a CA key", path, n)
		}
		if _, ok := k.(*ssh.Certificate); ok {
			return fmt.Errorf("%s:%d: a certificate cannot be a CA key", path, n)
		}
		cas = append(cas, AuthorizedKey{Key: k, Source: fmt.Sprintf("%s:%d", path, n)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("%s: no CA key in the file", path)
	}
	return cas, nil
}

// Grant is a successful authentication: which key or certificate
// allowed it, and what the login may do.
type Grant struct {
	Restrictions Restrictions
	// Source is the authorized_keys line ("FILE:LINE" or an LDAP DN and
	// position) or the CA ("ssh.trusted_user_ca_keys FILE:LINE") that
	// allowed the login.
	Source string
	// Cert is set for a certificate login.
	Cert *CertInfo
}

// CertInfo identifies a certificate in logs and the audit log.
type CertInfo struct {
	KeyID         string
	Serial        uint64
	Principal     string
	CAFingerprint string
}

// ErrKeyRefused is wrapped by every refusal of Authenticate; the detail
// (for the log and the audit log only) says why.
var ErrKeyRefused = errors.New("key refused")

// Authenticate decides whether key, offered from src at now, lets person
// u log in as login (whose User is u's name). For a plain key it must be
// one of u's keys whose line's from= and expiry-time= allow it; for a
// certificate, its CA must be one of t.CAs or one of u's cert-authority
// keys, its principal must map to the login (CertPrincipal), and its
// validity window, critical options and source-address must allow it. No
// key, certificate or CA may be revoked. Whether login.Tool may be acted
// as is decided separately (ActAs).
func (t *Trust) Authenticate(u *User, login Login, key ssh.PublicKey, src netip.Addr, now time.Time) (*Grant, error) {
	refuse := func(format string, args ...any) (*Grant, error) {
		return nil, fmt.Errorf("%w: %s", ErrKeyRefused, fmt.Sprintf(format, args...))
	}
	if login.User != u.Name {
		return refuse("login %s is not person %s", login.User, u.Name)
	}
	var revoked *Revocations
	if t != nil {
		revoked = t.Revoked
	}
	if err := revoked.Revoked(key); err != nil {
		return refuse("%v", err)
	}
	cert, isCert := key.(*ssh.Certificate)
	if !isCert {
		wire := key.Marshal()
		why := "key not authorized"
		for _, k := range u.Keys {
			if k.Options.CertAuthority || !bytes.Equal(k.Key.Marshal(), wire) {
				continue
			}
			if err := checkLine(k.Options, src, now); err != nil {
				why = k.Source + ": " + err.Error()
				continue
			}
			return &Grant{Restrictions: fromKeyOptions(k.Options), Source: k.Source}, nil
		}
		return refuse("%s", why)
	}

	if err := checkCertValidity(cert, now); err != nil {
		return refuse("%v", err)
	}
	cr, err := certRestrictions(cert)
	if err != nil {
		return refuse("%v", err)
	}
	if cr.SourceAddress != "" {
		ok, err := matchCIDRList(src, cr.SourceAddress)
		if err != nil || !ok {
			return refuse("certificate not valid from %s (source-address %s)", src, clip(cr.SourceAddress, 200))
		}
	}
	info := &CertInfo{KeyID: clip(cert.KeyId, 200), Serial: cert.Serial, CAFingerprint: ssh.FingerprintSHA256(cert.SignatureKey)}
	caWire := cert.SignatureKey.Marshal()
	why := fmt.Sprintf("certificate CA %s is not trusted", info.CAFingerprint)
	if t != nil {
		for _, ca := range t.CAs {
			if !bytes.Equal(ca.Key.Marshal(), caWire) {
				continue
			}
			p, err := CertPrincipal(cert.ValidPrincipals, login, nil)
			if err != nil {
				why = err.Error()
				break
			}
			info.Principal = p
			return &Grant{Restrictions: cr, Source: "ssh.trusted_user_ca_keys " + ca.Source, Cert: info}, nil
		}
	}
	for _, k := range u.Keys {
		if !k.Options.CertAuthority || !bytes.Equal(k.Key.Marshal(), caWire) {
			continue
		}
		if err := checkLine(k.Options, src, now); err != nil {
			why = k.Source + ": " + err.Error()
			continue
		}
		p, err := CertPrincipal(cert.ValidPrincipals, login, k.Options.Principals)
		if err != nil {
			why = k.Source + ": " + err.Error()
			continue
		}
		r, err := fromKeyOptions(k.Options).merge(cr)
		if err != nil {
			why = k.Source + ": " + err.Error()
			continue
		}
		info.Principal = p
		return &Grant{Restrictions: r, Source: k.Source, Cert: info}, nil
	}
	return refuse("%s", why)
}

// checkLine applies the expiry-time= and from= of an authorized_keys
// line (OpenSSH's auth_authorise_keyopts).
func checkLine(o KeyOptions, src netip.Addr, now time.Time) error {
	if !o.ExpiryTime.IsZero() && now.After(o.ExpiryTime) {
		return fmt.Errorf("key expired at %s (expiry-time)", o.ExpiryTime.UTC().Format(time.RFC3339))
	}
	if o.From != "" {
		ok, err := matchFrom(src, o.From)
		if err != nil {
			return fmt.Errorf("invalid from= list: %v", err)
		}
		if !ok {
			return fmt.Errorf("key not valid from %s (from=%q)", src, clip(o.From, 200))
		}
	}
	return nil
}

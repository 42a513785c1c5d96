package auth

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// ErrUnsupportedOption marks an authorized_keys option that OpenSSH
// knows but bastion does not implement. A key carrying one is unusable
// (fail closed), never used without it.
var ErrUnsupportedOption = errors.New("option not supported by bastion")

// Bounds on what one authorized_keys line may ask for (OpenSSH's
// SSH_AUTHOPT_PERMIT_MAX and SSH_AUTHOPT_ENV_MAX).
const (
	maxPermits = 4096
	maxEnv     = 1024
	// MaxKeyLine bounds one authorized_keys line (OpenSSH reads lines of
	// up to 16 KiB in authorized_keys; certificates and RSA-16384 fit).
	MaxKeyLine = 64 * 1024
)

// KeyOptions are the options of one authorized_keys line with OpenSSH's
// semantics (sshauthopt_parse in auth-options.c): names match without
// regard to case, values are double-quoted with \" as the only escape,
// `restrict` turns every permission off and later options may turn some
// back on, and anything unknown makes the line invalid.
type KeyOptions struct {
	// The permission flags, as after parsing: true means refused.
	NoPortForwarding  bool
	NoAgentForwarding bool
	NoX11Forwarding   bool
	NoPTY             bool
	NoUserRC          bool
	// Restrict is set when the line said `restrict`.
	Restrict bool
	// CertAuthority: the key is a CA whose certificates are accepted
	// for this user, not a key to log in with.
	CertAuthority bool
	// Command is the forced command of command="...".
	Command    string
	HasCommand bool
	// Principals (of principals="a,b") that a certificate signed by a
	// cert-authority key must carry one of; nil: the login name.
	Principals []string
	// From is the from="..." pattern list; empty: any address.
	From string
	// ExpiryTime is the earliest expiry-time="..."; zero: none.
	ExpiryTime time.Time
	// Environment holds environment="NAME=value" entries. bastion never
	// sets them (OpenSSH's PermitUserEnvironment no).
	Environment []string
	// PermitOpen lists the host:port destinations of permitopen="...";
	// nil: no restriction from the key.
	PermitOpen []string
	// PermitListen lists permitlisten="..." ([host:]port listens ssh -R
	// may ask for; a bare port is stored as "*:port").
	PermitListen []string
}

// ParseKeyOptions parses the options field of an authorized_keys line
// (everything before the key type). Errors say what is wrong; an error
// wrapping ErrUnsupportedOption names an option OpenSSH knows and
// bastion does not implement.
func ParseKeyOptions(s string) (KeyOptions, error) {
	o := KeyOptions{}
	if len(s) > MaxKeyLine {
		return o, fmt.Errorf("options longer than %d bytes", MaxKeyLine)
	}
	for len(s) > 0 && s[0] != ' ' && s[0] != '\t' {
		var (
			neg bool
			val string
			err error
		)
		switch {
		case optFlag(&s, "restrict", false, &neg):
			o.Restrict = true
			o.NoPortForwarding, o.NoAgentForwarding, o.NoX11Forwarding, o.NoPTY, o.NoUserRC = true, true, true, true, true
		case optFlag(&s, "cert-authority", false, &neg):
			o.CertAuthority = true
		case optFlag(&s, "port-forwarding", true, &neg):
			o.NoPortForwarding = neg
		case optFlag(&s, "agent-forwarding", true, &neg):
			o.NoAgentForwarding = neg
		case optFlag(&s, "x11-forwarding", true, &neg):
			o.NoX11Forwarding = neg
		case optFlag(&s, "touch-required", true, &neg):
			return o, fmt.Errorf("%s: %w", optName("touch-required", neg), ErrUnsupportedOption)
		case optFlag(&s, "verify-required", true, &neg):
			return o, fmt.Errorf("%s: %w", optName("verify-required", neg), ErrUnsupportedOption)
		case optFlag(&s, "pty", true, &neg):
			o.NoPTY = neg
		case optFlag(&s, "user-rc", true, &neg):
			o.NoUserRC = neg
		case optMatch(&s, "command"):
			if o.HasCommand {
				return o, errors.New(`multiple "command" clauses`)
			}
			if o.Command, err = optDequote(&s); err != nil {
				return o, fmt.Errorf("command: %w", err)
			}
			o.HasCommand = true
		case optMatch(&s, "principals"):
			if o.Principals != nil {
				return o, errors.New(`multiple "principals" clauses`)
			}
			if val, err = optDequote(&s); err != nil {
				return o, fmt.Errorf("principals: %w", err)
			}
			o.Principals = strings.Split(val, ",")
		case optMatch(&s, "from"):
			if o.From != "" {
				return o, errors.New(`multiple "from" clauses`)
			}
			if val, err = optDequote(&s); err != nil {
				return o, fmt.Errorf("from: %w", err)
			}
			if err := checkFromList(val); err != nil {
				return o, fmt.Errorf("from: %w", err)
			}
			o.From = val
		case optMatch(&s, "expiry-time"):
			if val, err = optDequote(&s); err != nil {
				return o, fmt.Errorf("expiry-time: %w", err)
			}
			t, err := parseAbsoluteTime(val)
			if err != nil {
				return o, fmt.Errorf("expiry-time: %w", err)
			}
			if o.ExpiryTime.IsZero() || t.Before(o.ExpiryTime) {
				o.ExpiryTime = t
			}
		case optMatch(&s, "environment"):
			if len(o.Environment) >= maxEnv {
				return o, errors.New("too many environment strings")
			}
			if val, err = optDequote(&s); err != nil {
				return o, fmt.Errorf("environment: %w", err)
			}
			name, _, found := strings.Cut(val, "=")
			if !found || !validEnvName(name) {
				return o, errors.New("invalid environment string")
			}
			o.Environment = append(o.Environment, val)
		case optMatch(&s, "permitopen"):
			if o.PermitOpen, err = appendPermit(&s, o.PermitOpen, false); err != nil {
				return o, fmt.Errorf("permitopen: %w", err)
			}
		case optMatch(&s, "permitlisten"):
			if o.PermitListen, err = appendPermit(&s, o.PermitListen, true); err != nil {
				return o, fmt.Errorf("permitlisten: %w", err)
			}
		case optMatch(&s, "tunnel"):
			return o, fmt.Errorf("tunnel: %w", ErrUnsupportedOption)
		}
		// After an option: the end of the options field, or a comma and
		// another option. Anything else is an unknown option.
		if len(s) == 0 || s[0] == ' ' || s[0] == '\t' {
			break
		}
		if s[0] != ',' {
			return o, fmt.Errorf("unknown key option at %q", clip(s, 40))
		}
		s = s[1:]
		if len(s) == 0 {
			return o, errors.New("unexpected end of options")
		}
	}
	if o.Principals != nil && !o.CertAuthority {
		return o, errors.New("principals on a key that is not a cert-authority")
	}
	return o, nil
}

func optName(name string, neg bool) string {
	if neg {
		return "no-" + name
	}
	return name
}

// optFlag matches a flag option (case-insensitive prefix, as OpenSSH's
// opt_flag), optionally negated with "no-".
func optFlag(s *string, name string, allowNegate bool, neg *bool) bool {
	t := *s
	n := false
	if allowNegate && len(t) >= 3 && strings.EqualFold(t[:3], "no-") {
		t, n = t[3:], true
	}
	if len(t) >= len(name) && strings.EqualFold(t[:len(name)], name) {
		*s, *neg = t[len(name):], n
		return true
	}
	return false
}

// optMatch matches NAME= (case-insensitive) and consumes it.
func optMatch(s *string, name string) bool {
	t := *s
	if len(t) > len(name) && strings.EqualFold(t[:len(name)], name) && t[len(name)] == '=' {
		*s = t[len(name)+1:]
		return true
	}
	return false
}

// optDequote reads a double-quoted value; \" is the only escape.
func optDequote(s *string) (string, error) {
	t := *s
	if len(t) == 0 || t[0] != '"' {
		return "", errors.New("missing start quote")
	}
	t = t[1:]
	var b strings.Builder
	for len(t) > 0 && t[0] != '"' {
		if t[0] == '\\' && len(t) > 1 && t[1] == '"' {
			t = t[1:]
		}
		b.WriteByte(t[0])
		t = t[1:]
	}
	if len(t) == 0 {
		return "", errors.New("missing end quote")
	}
	*s = t[1:]
	return b.String(), nil
}

func appendPermit(s *string, list []string, allowBarePort bool) ([]string, error) {
	if len(list) >= maxPermits {
		return list, errors.New("too many permission directives")
	}
	v, err := optDequote(s)
	if err != nil {
		return list, err
	}
	if allowBarePort && !strings.Contains(v, ":") {
		v = "*:" + v
	}
	if _, _, err := splitPermit(v); err != nil {
		return list, err
	}
	return append(list, v), nil
}

// splitPermit splits host:port of permitopen (host may be [v6]; port a
// number from 1 to 65535 or *).
func splitPermit(v string) (host, port string, err error) {
	if strings.HasPrefix(v, "[") {
		end := strings.Index(v, "]")
		if end < 0 || len(v) < end+2 || v[end+1] != ':' {
			return "", "", errors.New("invalid permission hostname")
		}
		host, port = v[1:end], v[end+2:]
	} else {
		i := strings.Index(v, ":")
		if i < 0 {
			return "", "", errors.New("invalid permission port")
		}
		host, port = v[:i], v[i+1:]
	}
	if host == "" || len(host) >= 1025 {
		return "", "", errors.New("invalid permission hostname")
	}
	if port != "*" {
		n, err := strconv.Atoi(port)
		if err != nil || n <= 0 || n > 65535 {
			return "", "", errors.New("invalid permission port")
		}
	}
	return host, port, nil
}

// PermitOpenAllows reports whether a permitopen list (nil: no list)
// allows host:port, with OpenSSH's rule: the host is compared as written
// (or "*"), the port equal (or "*").
func PermitOpenAllows(list []string, host string, port uint32) bool {
	if list == nil {
		return true
	}
	for _, p := range list {
		h, ps, err := splitPermit(p)
		if err != nil {
			continue
		}
		if ps != "*" && ps != strconv.FormatUint(uint64(port), 10) {
			continue
		}
		if h == "*" || h == host || (net.ParseIP(h) != nil && net.ParseIP(h).Equal(net.ParseIP(host))) {
			return true
		}
	}
	return false
}

// parseAbsoluteTime reads YYYYMMDD[HHMM[SS]] in local time, or UTC with
// a Z or UTC suffix (OpenSSH's parse_absolute_time).
func parseAbsoluteTime(s string) (time.Time, error) {
	loc := time.Local
	switch {
	case len(s) > 1 && strings.EqualFold(s[len(s)-1:], "Z"):
		s, loc = s[:len(s)-1], time.UTC
	case len(s) > 3 && strings.EqualFold(s[len(s)-3:], "UTC"):
		s, loc = s[:len(s)-3], time.UTC
	}
	var layout string
	switch len(s) {
	case 8:
		layout = "20060102"
	case 12:
		layout = "200601021504"
	case 14:
		layout = "20060102150405"
	default:
		return time.Time{}, errors.New("invalid expires time (want YYYYMMDD[HHMM[SS]][Z])")
	}
	t, err := time.ParseInLocation(layout, s, loc)
	if err != nil || t.Unix() <= 0 {
		return time.Time{}, errors.New("invalid expires time (want YYYYMMDD[HHMM[SS]][Z])")
	}
	return t, nil
}

func validEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// clip bounds a string taken from input before it goes into a message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

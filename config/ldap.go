package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// LDAP configures the auth/ldap directory (directory.type: ldap).
//
// DN settings may contain {base}, which stands for BaseDN. Filter
// templates may contain {name} (the user or tool name), {base},
// {disabled_policy} (DisabledPolicyDN) and {prefix} (ToolGroupPrefix);
// GroupFilter may contain {dn} (the member's DN) and {name}. Every value
// put into a filter is escaped (RFC 4515); names are validated before.
type LDAP struct {
	// URLs are tried in order, failing over to the next when one is down:
	// ldap://host[:port] (upgraded with StartTLS) or ldaps://host[:port].
	URLs []string `yaml:"urls"`
	// StartTLS upgrades ldap:// connections with StartTLS. Turning it off
	// sends the bind password in clear text: only for a local test server.
	StartTLS bool `yaml:"start_tls"`
	// CAFile is a PEM bundle that verifies the servers' certificates
	// (empty: the system roots). It is re-read when it changes.
	CAFile string `yaml:"ca_file"`
	// BindDN is the DN for simple bind; empty binds anonymously.
	BindDN string `yaml:"bind_dn"`
	// BindPasswordFile holds the bind password (one line); it is re-read
	// for every new connection, so it can be rotated in place.
	BindPasswordFile string `yaml:"bind_password_file"`

	// BaseDN is the directory suffix, e.g. dc=wikimedia,dc=org.
	BaseDN string `yaml:"base_dn"`
	// UserBase is searched (subtree) for people.
	UserBase string `yaml:"user_base"`
	// UserFilter selects a person who may log in.
	UserFilter string `yaml:"user_filter"`
	// DisabledPolicyDN is the pwdPolicySubentry of disabled accounts.
	DisabledPolicyDN string `yaml:"disabled_policy_dn"`
	// GroupBases are searched (subtree) for the groups of a user.
	GroupBases []string `yaml:"group_bases"`
	// GroupFilter selects the groups of a member.
	GroupFilter string `yaml:"group_filter"`
	// ToolGroupBase: a group under it named ToolGroupPrefix+TOOL makes its
	// members maintainers of tool TOOL.
	ToolGroupBase   string `yaml:"tool_group_base"`
	ToolGroupPrefix string `yaml:"tool_group_prefix"`
	// ToolBase is searched (subtree) for tool accounts with ToolFilter.
	ToolBase   string `yaml:"tool_base"`
	ToolFilter string `yaml:"tool_filter"`

	// DialTimeout bounds connecting, the TLS handshake and the bind (or,
	// without bind_dn, a read of the root DSE) to one server.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// Timeout bounds the searches of one lookup on one server. Past it
	// (or DialTimeout), the server is taken for hung: the next one is
	// tried, and the hung one is tried after the others for a while.
	// DialTimeout+Timeout must leave room for a second server within
	// the LoginLookupBudget a login waits.
	Timeout time.Duration `yaml:"timeout"`
	// SizeLimit caps the entries of a group search (people and tool
	// searches ask for at most 2: more than one match is refused).
	SizeLimit int `yaml:"size_limit"`
	// TimeLimit is the server-side time limit of a search (whole seconds).
	TimeLimit time.Duration `yaml:"time_limit"`
	// PoolSize caps the open connections, which are reused across logins.
	PoolSize int `yaml:"pool_size"`
	// PoolIdleTimeout closes connections unused for this long.
	PoolIdleTimeout time.Duration `yaml:"pool_idle_timeout"`

	// CacheTTL is how long an answer is reused without asking LDAP.
	// 0 asks LDAP every time (concurrent lookups are still coalesced).
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// StaleIfError: when no server answers, an answer that expired less
	// than this long ago is served (and logged). 0 disables it.
	StaleIfError time.Duration `yaml:"stale_if_error"`
	// StaleWait: a login whose cached answer expired (but is within
	// StaleIfError) waits this long for LDAP, then is served the stale
	// answer while the lookup goes on (a hung server answers nothing,
	// not even an error). 0 serves it only when every server failed.
	StaleWait time.Duration `yaml:"stale_wait"`
	// NegativeTTL is how long "no such user/tool" is remembered.
	NegativeTTL time.Duration `yaml:"negative_ttl"`
	// CacheMaxEntries bounds the cache.
	CacheMaxEntries int `yaml:"cache_max_entries"`

	// KillSwitch refuses every LDAP login.
	KillSwitch bool `yaml:"kill_switch"`
	// KillSwitchFile refuses every LDAP login while it exists (checked at
	// each lookup); empty disables the check.
	KillSwitchFile string `yaml:"kill_switch_file"`
}

// Default templates: those of Toolforge.
const (
	DefaultLDAPUserFilter  = "(&(objectClass=ldapPublicKey)(uid={name})(!(pwdPolicySubentry={disabled_policy})))"
	DefaultLDAPGroupFilter = "(|(member={dn})(memberUid={name}))"
	DefaultLDAPToolFilter  = "(&(objectClass=posixAccount)(uid={prefix}{name}))"
)

func defaultLDAP() LDAP {
	return LDAP{
		StartTLS:         true,
		UserBase:         "ou=people,{base}",
		UserFilter:       DefaultLDAPUserFilter,
		DisabledPolicyDN: "cn=disabled,ou=ppolicies,{base}",
		GroupBases:       []string{"ou=groups,{base}", "ou=servicegroups,{base}"},
		GroupFilter:      DefaultLDAPGroupFilter,
		ToolGroupBase:    "ou=servicegroups,{base}",
		ToolGroupPrefix:  "tools.",
		ToolBase:         "ou=servicegroups,{base}",
		ToolFilter:       DefaultLDAPToolFilter,
		DialTimeout:      2 * time.Second,
		Timeout:          3 * time.Second,
		SizeLimit:        1000,
		TimeLimit:        10 * time.Second,
		PoolSize:         4,
		PoolIdleTimeout:  5 * time.Minute,
		CacheTTL:         60 * time.Second,
		StaleIfError:     15 * time.Minute,
		StaleWait:        time.Second,
		NegativeTTL:      10 * time.Second,
		CacheMaxEntries:  10000,
		KillSwitchFile:   "/etc/block-ldap-key-lookup",
	}
}

// LoginLookupBudget is how long a login waits for the directory (sshd's
// lookup timeout); the LDAP timeouts are checked against it.
const LoginLookupBudget = 10 * time.Second

// DN expands {base} in a DN setting.
func (l *LDAP) DN(s string) string { return strings.ReplaceAll(s, "{base}", l.BaseDN) }

// Filter expands a filter template; vars maps placeholder names without
// braces ("name") to values, which it escapes. {base}, {disabled_policy}
// and {prefix} are always available. Placeholders are replaced in one pass,
// so a value can never introduce another placeholder.
func (l *LDAP) Filter(tmpl string, vars map[string]string) string {
	pairs := []string{
		"{base}", ldap.EscapeFilter(l.BaseDN),
		"{disabled_policy}", ldap.EscapeFilter(l.DN(l.DisabledPolicyDN)),
		"{prefix}", ldap.EscapeFilter(l.ToolGroupPrefix),
	}
	for k, v := range vars {
		pairs = append(pairs, "{"+k+"}", ldap.EscapeFilter(v))
	}
	return strings.NewReplacer(pairs...).Replace(tmpl)
}

func (l *LDAP) resolvePaths(abs func(*string)) {
	abs(&l.CAFile)
	abs(&l.BindPasswordFile)
	abs(&l.KillSwitchFile)
}

func (l *LDAP) validate(p *Problems, path string) {
	key := func(k string) string { return path + "." + k }
	if len(l.URLs) == 0 {
		p.Addf(key("urls"), "at least one server URL is required")
	}
	for i, s := range l.URLs {
		if err := checkLDAPURL(s); err != "" {
			p.Addf(fmt.Sprintf("%s[%d]", key("urls"), i), "%s", err)
		}
	}
	if l.BaseDN == "" {
		p.Addf(key("base_dn"), "required, e.g. dc=example,dc=org")
	} else if _, err := ldap.ParseDN(l.BaseDN); err != nil {
		p.Addf(key("base_dn"), "not a DN: %v", err)
	}
	dn := func(k, v string, required bool) {
		switch {
		case v == "" && required:
			p.Addf(key(k), "required")
		case v != "":
			if _, err := ldap.ParseDN(l.DN(v)); err != nil {
				p.Addf(key(k), "not a DN (after {base} expansion): %v", err)
			}
		}
	}
	dn("user_base", l.UserBase, true)
	dn("disabled_policy_dn", l.DisabledPolicyDN, false)
	dn("tool_group_base", l.ToolGroupBase, true)
	dn("tool_base", l.ToolBase, true)
	if len(l.GroupBases) == 0 {
		p.Addf(key("group_bases"), "at least one group search base is required")
	}
	for i, b := range l.GroupBases {
		dn(fmt.Sprintf("group_bases[%d]", i), b, true)
	}
	filter := func(k, tmpl string, need ...string) {
		if tmpl == "" {
			p.Addf(key(k), "required")
			return
		}
		vars := map[string]string{}
		for _, n := range need {
			if !strings.Contains(tmpl, "{"+n+"}") {
				p.Addf(key(k), "must contain {%s}", n)
			}
			vars[n] = "x"
		}
		if _, err := ldap.CompileFilter(l.Filter(tmpl, vars)); err != nil {
			p.Addf(key(k), "not an LDAP filter: %v", err)
		}
	}
	filter("user_filter", l.UserFilter, "name")
	filter("tool_filter", l.ToolFilter, "name")
	filter("group_filter", l.GroupFilter)
	if l.GroupFilter != "" && !strings.Contains(l.GroupFilter, "{dn}") && !strings.Contains(l.GroupFilter, "{name}") {
		p.Addf(key("group_filter"), "must contain {dn} or {name}")
	}

	if l.BindDN != "" {
		if _, err := ldap.ParseDN(l.DN(l.BindDN)); err != nil {
			p.Addf(key("bind_dn"), "not a DN: %v", err)
		}
		if l.BindPasswordFile == "" {
			p.Addf(key("bind_password_file"), "required when bind_dn is set (the password is never in the config)")
		}
	} else if l.BindPasswordFile != "" {
		p.Addf(key("bind_password_file"), "set, but bind_dn is empty")
	}

	Positive(p, key("dial_timeout"), l.DialTimeout)
	Positive(p, key("timeout"), l.Timeout)
	Positive(p, key("time_limit"), l.TimeLimit)
	Positive(p, key("pool_idle_timeout"), l.PoolIdleTimeout)
	NonNegative(p, key("cache_ttl"), l.CacheTTL)
	NonNegative(p, key("stale_if_error"), l.StaleIfError)
	NonNegative(p, key("negative_ttl"), l.NegativeTTL)
	NonNegative(p, key("stale_wait"), l.StaleWait)
	if l.DialTimeout > 0 && l.Timeout > 0 && l.DialTimeout+l.Timeout > LoginLookupBudget/2 {
		p.Addf(key("timeout"), "dial_timeout (%s) + timeout (%s) must be at most %s: a login waits %s for the directory, and a hung first server must leave time for the next one",
			l.DialTimeout, l.Timeout, LoginLookupBudget/2, LoginLookupBudget)
	}
	if l.StaleWait >= LoginLookupBudget/2 {
		p.Addf(key("stale_wait"), "must be under %s (a login waits %s for the directory), not %s", LoginLookupBudget/2, LoginLookupBudget, l.StaleWait)
	}
	AtLeast(p, key("size_limit"), l.SizeLimit, 1)
	AtLeast(p, key("pool_size"), l.PoolSize, 1)
	AtLeast(p, key("cache_max_entries"), l.CacheMaxEntries, 1)
}

func checkLDAPURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("not a URL: %v", err)
	}
	switch {
	case u.Scheme != "ldap" && u.Scheme != "ldaps":
		return fmt.Sprintf("scheme must be ldap or ldaps, not %q (in %q)", u.Scheme, s)
	case u.Hostname() == "":
		return fmt.Sprintf("no host in %q", s)
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return fmt.Sprintf("want only scheme://host[:port] in %q", s)
	}
	if p := u.Port(); p != "" {
		var n int
		if _, err := fmt.Sscanf(p, "%d", &n); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("bad port %q in %q", p, s)
		}
	}
	return ""
}

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ldapYAML is the worked example of the README, over a Toolforge-like tree.
const ldapYAML = `
ssh:
  listen: ":2222"
  host_keys: [/etc/bastion/ssh_host_ed25519_key]
directory:
  type: ldap
ldap:
  urls:
    - ldap://ldap-ro.eqiad.example.org
    - ldaps://ldap-ro.codfw.example.org:636
  ca_file: ca.pem
  bind_dn: cn=proxyagent,ou=profile,{base}
  bind_password_file: /run/secrets/ldap-password
  base_dn: dc=wikimedia,dc=org
  cache_ttl: 2m
  stale_if_error: 30m
`

func TestLDAPParseDefaults(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "bastion.yaml")
	if err := os.WriteFile(path, []byte(ldapYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	l := cfg.LDAP
	if want := filepath.Join(dir, "ca.pem"); l.CAFile != want {
		t.Errorf("ca_file = %q, want it resolved to %q", l.CAFile, want)
	}
	if l.CacheTTL != 2*time.Minute || l.StaleIfError != 30*time.Minute || l.NegativeTTL != 10*time.Second {
		t.Errorf("cache durations = %s %s %s", l.CacheTTL, l.StaleIfError, l.NegativeTTL)
	}
	if !l.StartTLS || l.ToolGroupPrefix != "tools." || l.KillSwitchFile != "/etc/block-ldap-key-lookup" {
		t.Errorf("defaults lost: start_tls=%v prefix=%q kill_switch_file=%q", l.StartTLS, l.ToolGroupPrefix, l.KillSwitchFile)
	}
	if got, want := l.DN(l.UserBase), "ou=people,dc=wikimedia,dc=org"; got != want {
		t.Errorf("user base = %q, want %q", got, want)
	}
	if got, want := l.DN(l.BindDN), "cn=proxyagent,ou=profile,dc=wikimedia,dc=org"; got != want {
		t.Errorf("bind dn = %q, want %q", got, want)
	}
}

func TestLDAPFilter(t *testing.T) {
	t.Parallel()
	l := defaultLDAP()
	l.BaseDN = "dc=wikimedia,dc=org"
	tests := []struct {
		tmpl string
		vars map[string]string
		want string
	}{
		{DefaultLDAPUserFilter, map[string]string{"name": "alice"},
			"(&(objectClass=ldapPublicKey)(uid=alice)(!(pwdPolicySubentry=cn=disabled,ou=ppolicies,dc=wikimedia,dc=org)))"},
		{DefaultLDAPToolFilter, map[string]string{"name": "mytool"},
			"(&(objectClass=posixAccount)(uid=tools.mytool))"},
		// Filter syntax in a value is escaped, never interpreted.
		{"(uid={name})", map[string]string{"name": "*)(uid=*"}, `(uid=\2a\29\28uid=\2a)`},
		{"(uid={name})", map[string]string{"name": "a\x00b\\"}, `(uid=a\00b\5c)`},
		// A value cannot smuggle in another placeholder.
		{"(&(uid={name})(x={base}))", map[string]string{"name": "{base}"}, "(&(uid={base})(x=dc=wikimedia,dc=org))"},
		{DefaultLDAPGroupFilter, map[string]string{"dn": "uid=a(b),ou=people", "name": "a"},
			`(|(member=uid=a\28b\29,ou=people)(memberUid=a))`},
	}
	for _, tt := range tests {
		if got := l.Filter(tt.tmpl, tt.vars); got != tt.want {
			t.Errorf("Filter(%q, %q) = %q, want %q", tt.tmpl, tt.vars, got, tt.want)
		}
	}
}

func TestLDAPValidate(t *testing.T) {
	t.Parallel()
	valid := func() LDAP {
		l := defaultLDAP()
		l.URLs = []string{"ldap://127.0.0.1:389", "ldaps://ldap.example.org"}
		l.BaseDN = "dc=example,dc=org"
		return l
	}
	tests := []struct {
		name  string
		edit  func(*LDAP)
		wants []string // substrings of the error; none: valid
	}{
		{"defaults with urls and base", func(*LDAP) {}, nil},
		{"bind with password file", func(l *LDAP) { l.BindDN = "cn=x,{base}"; l.BindPasswordFile = "/p" }, nil},
		{"no urls", func(l *LDAP) { l.URLs = nil }, []string{"ldap.urls: at least one"}},
		{"bad scheme", func(l *LDAP) { l.URLs = []string{"ldap://a", "http://b"} }, []string{"ldap.urls[1]: scheme must be ldap or ldaps"}},
		{"no host", func(l *LDAP) { l.URLs = []string{"ldaps://"} }, []string{"ldap.urls[0]: no host"}},
		{"path in url", func(l *LDAP) { l.URLs = []string{"ldap://a/dc=x"} }, []string{"ldap.urls[0]: want only"}},
		{"bad port", func(l *LDAP) { l.URLs = []string{"ldap://a:0"} }, []string{"ldap.urls[0]: bad port"}},
		{"no base", func(l *LDAP) { l.BaseDN = "" }, []string{"ldap.base_dn: required"}},
		{"bad base", func(l *LDAP) { l.BaseDN = "not a dn" }, []string{"ldap.base_dn: not a DN"}},
		{"bad user base", func(l *LDAP) { l.UserBase = "ou=people,,{base}" }, []string{"ldap.user_base: not a DN"}},
		{"bad group base", func(l *LDAP) { l.GroupBases = []string{"{base}", "=x"} }, []string{"ldap.group_bases[1]: not a DN"}},
		{"no group bases", func(l *LDAP) { l.GroupBases = nil }, []string{"ldap.group_bases: at least one"}},
		{"filter without name", func(l *LDAP) { l.UserFilter = "(uid=alice)" }, []string{"ldap.user_filter: must contain {name}"}},
		{"filter syntax", func(l *LDAP) { l.UserFilter = "(&(uid={name})" }, []string{"ldap.user_filter: not an LDAP filter"}},
		{"tool filter", func(l *LDAP) { l.ToolFilter = "" }, []string{"ldap.tool_filter: required"}},
		{"group filter", func(l *LDAP) { l.GroupFilter = "(objectClass=posixGroup)" }, []string{"ldap.group_filter: must contain {dn} or {name}"}},
		{"bind without password", func(l *LDAP) { l.BindDN = "cn=x,{base}" }, []string{"ldap.bind_password_file: required"}},
		{"password without bind", func(l *LDAP) { l.BindPasswordFile = "/p" }, []string{"ldap.bind_password_file: set, but bind_dn is empty"}},
		{"timeouts", func(l *LDAP) { l.Timeout = 0; l.DialTimeout = -time.Second }, []string{"ldap.timeout: must be positive", "ldap.dial_timeout: must be positive"}},
		{"timeouts over half the login's wait", func(l *LDAP) { l.DialTimeout = 5 * time.Second; l.Timeout = 10 * time.Second },
			[]string{"ldap.timeout: dial_timeout (5s) + timeout (10s) must be at most 5s"}},
		{"stale wait", func(l *LDAP) { l.StaleWait = 6 * time.Second }, []string{"ldap.stale_wait: must be under 5s"}},
		{"negative stale wait", func(l *LDAP) { l.StaleWait = -1 }, []string{"ldap.stale_wait: must not be negative"}},
		{"cache", func(l *LDAP) { l.StaleIfError = -1; l.CacheMaxEntries = 0 }, []string{"ldap.stale_if_error: must not be negative", "ldap.cache_max_entries: must be at least 1"}},
		{"zero cache and stale are allowed", func(l *LDAP) { l.CacheTTL = 0; l.StaleIfError = 0; l.NegativeTTL = 0 }, nil},
		{"limits", func(l *LDAP) { l.SizeLimit = 0; l.PoolSize = -1 }, []string{"ldap.size_limit: must be at least 1", "ldap.pool_size: must be at least 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := valid()
			tt.edit(&l)
			var p Problems
			l.validate(&p, "ldap")
			err := p.Err()
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatalf("unexpected problems:\n%v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no problem reported, want %q", tt.wants)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("problems:\n%v\nwant one containing %q", err, w)
				}
			}
		})
	}
}

// The ldap section is validated only when the directory is LDAP.
func TestLDAPValidatedOnlyForLDAPDirectory(t *testing.T) {
	t.Parallel()
	cfg, err := Parse([]byte("ssh: {host_keys: [k]}\ndirectory: {type: static, file: users.yaml}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("static directory with empty ldap section: %v", err)
	}
	cfg.Directory.Type = "ldap"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ldap.urls") {
		t.Fatalf("ldap directory with empty ldap section: %v", err)
	}
}

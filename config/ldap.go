package config

// LDAP configures the auth/ldap directory (directory.type: ldap).
type LDAP struct {
	// URLs are tried in order: ldap:// (with StartTLS) or ldaps://.
	URLs []string `yaml:"urls"`
}

func defaultLDAP() LDAP { return LDAP{} }

func (l *LDAP) resolvePaths(abs func(*string)) {}

func (l *LDAP) validate(p *Problems, path string) {
	if len(l.URLs) == 0 {
		p.Addf(path+".urls", "at least one server URL is required")
	}
}

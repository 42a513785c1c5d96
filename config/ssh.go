package config

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SSH configures the listener and the protocol.
type SSH struct {
	// Listen is the TCP address, host:port.
	Listen string `yaml:"listen"`
	// HostKeys are private key files (OpenSSH format). In serve mode they
	// must exist; bastion dev generates them in its state directory.
	HostKeys []string `yaml:"host_keys"`
	// Banner is printed before authentication, if set.
	Banner string `yaml:"banner"`
	// SFTPServer is the command the backend runs (with the account's
	// shell) for the "sftp" subsystem. Empty: with the local backend,
	// OpenSSH's sftp-server from the usual places, else bastion's own;
	// with the kube backend, /usr/lib/openssh/sftp-server in the image.
	SFTPServer string `yaml:"sftp_server"`
	// Ciphers narrows the ciphers offered to a subset of DefaultCiphers.
	// Empty: all of them, with the AES-GCM steering described in sshd's
	// package documentation.
	Ciphers []string `yaml:"ciphers"`
	// MACs narrows the MACs (used with the -ctr ciphers only) to a subset
	// of DefaultMACs. Empty: all of them.
	MACs []string `yaml:"macs"`
	// Kex narrows the key exchanges to a subset of DefaultKex. Empty: all.
	Kex []string `yaml:"kex"`
	// TrustedUserCAKeys are files of CA public keys (one per line) whose
	// user certificates are accepted for the person named in a principal
	// (OpenSSH's TrustedUserCAKeys). Reloaded when they change.
	TrustedUserCAKeys []string `yaml:"trusted_user_ca_keys"`
	// RevokedKeys is an OpenSSH KRL (ssh-keygen -k) or a list of public
	// keys and SHA256 fingerprints, checked for every key and certificate
	// (OpenSSH's RevokedKeys). Reloaded when it changes; a file that
	// cannot be read refuses the config.
	RevokedKeys string `yaml:"revoked_keys"`
}

// The algorithms bastion can offer, in the server's order of preference,
// and by default offers all of them. Each set is what every current client
// can use (OpenSSH, PuTTY, Dropbear, paramiko, asyncssh, libssh2, JSch) and
// nothing that ssh-audit marks as weak: no CBC, SHA-1, NIST curves or
// encrypt-and-MAC. Host key algorithms follow from the host keys
// (ssh-ed25519; rsa-sha2-512 and rsa-sha2-256 for an RSA key).
var (
	DefaultKex     = []string{"mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org"}
	DefaultCiphers = []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr"}
	DefaultMACs    = []string{"hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"}
)

func defaultSSH() SSH {
	return SSH{
		Listen: ":22",
	}
}

func (s *SSH) validate(p *Problems, path string) {
	if err := validateListen(s.Listen); err != "" {
		p.Addf(path+".listen", "%s", err)
	}
	if len(s.HostKeys) == 0 {
		p.Addf(path+".host_keys", "at least one host key file is required")
	}
	for i, k := range s.HostKeys {
		if k == "" {
			p.Addf(path+".host_keys["+strconv.Itoa(i)+"]", "empty path")
		}
	}
	validateAlgorithms(p, path+".kex", s.Kex, DefaultKex)
	validateAlgorithms(p, path+".ciphers", s.Ciphers, DefaultCiphers)
	validateAlgorithms(p, path+".macs", s.MACs, DefaultMACs)
	for i, k := range s.TrustedUserCAKeys {
		if k == "" {
			p.Addf(path+".trusted_user_ca_keys["+strconv.Itoa(i)+"]", "empty path")
		}
	}
}

// validateAlgorithms checks that every name in list is one of allowed
// and appears once. Old algorithms (CBC, SHA-1, NIST curves...) are left
// out of allowed on purpose, so they get the same answer.
func validateAlgorithms(p *Problems, path string, list, allowed []string) {
	for i, name := range list {
		key := path + "[" + strconv.Itoa(i) + "]"
		switch {
		case !slices.Contains(allowed, name):
			p.Addf(key, "%s is not supported; choose from %s", name, strings.Join(allowed, ", "))
		case slices.Index(list, name) < i:
			p.Addf(key, "%s is listed twice", name)
		}
	}
}

func validateListen(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "want host:port, e.g. 127.0.0.1:2222 or :22: " + err.Error()
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return "host must be an IP address or empty, not " + strconv.Quote(host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "port must be a number from 0 to 65535, not " + strconv.Quote(port)
	}
	return ""
}

// Limits bound what clients may use. A zero duration disables that limit
// where the comment says so.
type Limits struct {
	// LoginGraceTime: time from connect to successful authentication.
	LoginGraceTime time.Duration `yaml:"login_grace_time"`
	// MaxAuthTries per connection.
	MaxAuthTries int `yaml:"max_auth_tries"`
	// MaxStartups caps concurrent unauthenticated connections, with
	// OpenSSH's random early drop ("start:rate:full", or one number).
	MaxStartups Startups `yaml:"max_startups"`
	// PerSourceMaxStartups caps concurrent unauthenticated connections
	// from one IP address (OpenSSH's PerSourceMaxStartups).
	PerSourceMaxStartups int `yaml:"per_source_max_startups"`
	// MaxConnsPerSource caps concurrent connections (logged in or not)
	// from one IP address; many users may share one NAT address.
	MaxConnsPerSource int `yaml:"max_conns_per_source"`
	// Penalties refuse sources that misbehave before logging in.
	Penalties Penalties `yaml:"penalties"`
	// MaxEnvVars and MaxEnvBytes cap a session's accepted env requests
	// (names plus values); beyond them requests are refused.
	MaxEnvVars  int `yaml:"max_env_vars"`
	MaxEnvBytes int `yaml:"max_env_bytes"`
	// MaxSessionsPerConn caps session channels per connection.
	MaxSessionsPerConn int `yaml:"max_sessions_per_conn"`
	// MaxSessionsPerUser caps session channels per user across connections.
	MaxSessionsPerUser int `yaml:"max_sessions_per_user"`
	// MaxChannelsPerConn caps all open channels (sessions and forwards).
	MaxChannelsPerConn int `yaml:"max_channels_per_conn"`
	// KeepaliveInterval between server keepalives; 0 disables them.
	KeepaliveInterval time.Duration `yaml:"keepalive_interval"`
	// KeepaliveCountMax unanswered keepalives before disconnecting.
	KeepaliveCountMax int `yaml:"keepalive_count_max"`
	// IdleTimeout ends a connection with no channel data either way; 0 disables.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxSessionDuration ends a connection this long after login; 0 disables.
	MaxSessionDuration time.Duration `yaml:"max_session_duration"`
	// ShutdownGrace is how long a drain waits for sessions to end.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
}

func defaultLimits() Limits {
	return Limits{
		LoginGraceTime:       30 * time.Second,
		MaxAuthTries:         6,
		MaxStartups:          Startups{Begin: 50, Rate: 30, Full: 100},
		PerSourceMaxStartups: 10,
		MaxConnsPerSource:    50,
		Penalties:            defaultPenalties(),
		MaxEnvVars:           64,
		MaxEnvBytes:          64 << 10,
		MaxSessionsPerConn:   10,
		MaxSessionsPerUser:   50,
		MaxChannelsPerConn:   64,
		KeepaliveInterval:    30 * time.Second,
		KeepaliveCountMax:    3,
		IdleTimeout:          0,
		MaxSessionDuration:   0,
		ShutdownGrace:        30 * time.Second,
	}
}

func (l *Limits) validate(p *Problems, path string) {
	Positive(p, path+".login_grace_time", l.LoginGraceTime)
	AtLeast(p, path+".max_auth_tries", l.MaxAuthTries, 1)
	l.MaxStartups.validate(p, path+".max_startups")
	AtLeast(p, path+".per_source_max_startups", l.PerSourceMaxStartups, 1)
	AtLeast(p, path+".max_conns_per_source", l.MaxConnsPerSource, 1)
	l.Penalties.validate(p, path+".penalties")
	AtLeast(p, path+".max_env_vars", l.MaxEnvVars, 1)
	AtLeast(p, path+".max_env_bytes", l.MaxEnvBytes, 1)
	AtLeast(p, path+".max_sessions_per_conn", l.MaxSessionsPerConn, 1)
	AtLeast(p, path+".max_sessions_per_user", l.MaxSessionsPerUser, 1)
	AtLeast(p, path+".max_channels_per_conn", l.MaxChannelsPerConn, 1)
	NonNegative(p, path+".keepalive_interval", l.KeepaliveInterval)
	if l.KeepaliveInterval > 0 {
		AtLeast(p, path+".keepalive_count_max", l.KeepaliveCountMax, 1)
	}
	NonNegative(p, path+".idle_timeout", l.IdleTimeout)
	NonNegative(p, path+".max_session_duration", l.MaxSessionDuration)
	NonNegative(p, path+".shutdown_grace", l.ShutdownGrace)
}

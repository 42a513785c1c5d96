package config

import (
	"net"
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
	// SFTPServer is the sftp-server binary the backend runs for the
	// "sftp" subsystem.
	SFTPServer string `yaml:"sftp_server"`
	// Ciphers overrides the ciphers offered (a subset of ModernCiphers).
	// Empty: AES-GCM only where the CPU has AES instructions (clients
	// then pick it over their default chacha20-poly1305, which is much
	// slower in Go), plus chacha20-poly1305 elsewhere.
	Ciphers []string `yaml:"ciphers"`
}

// ModernCiphers are the ciphers bastion can offer.
var ModernCiphers = []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"}

func defaultSSH() SSH {
	return SSH{
		Listen:     ":22",
		SFTPServer: "/usr/lib/openssh/sftp-server",
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
	for i, c := range s.Ciphers {
		ok := false
		for _, m := range ModernCiphers {
			ok = ok || c == m
		}
		if !ok {
			p.Addf(path+".ciphers["+strconv.Itoa(i)+"]", "%q is not one of %s", c, strings.Join(ModernCiphers, ", "))
		}
	}
	if s.SFTPServer == "" {
		p.Addf(path+".sftp_server", "must be set (path of OpenSSH's sftp-server)")
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
	// MaxStartups caps concurrent unauthenticated connections.
	MaxStartups int `yaml:"max_startups"`
	// MaxConnsPerSource caps concurrent connections from one IP address.
	MaxConnsPerSource int `yaml:"max_conns_per_source"`
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
		LoginGraceTime:     30 * time.Second,
		MaxAuthTries:       6,
		MaxStartups:        100,
		MaxConnsPerSource:  50,
		MaxSessionsPerConn: 10,
		MaxSessionsPerUser: 50,
		MaxChannelsPerConn: 64,
		KeepaliveInterval:  30 * time.Second,
		KeepaliveCountMax:  3,
		IdleTimeout:        0,
		MaxSessionDuration: 0,
		ShutdownGrace:      30 * time.Second,
	}
}

func (l *Limits) validate(p *Problems, path string) {
	pos := func(key string, v int) {
		if v <= 0 {
			p.Addf(path+"."+key, "must be at least 1, not %d", v)
		}
	}
	nonneg := func(key string, d time.Duration) {
		if d < 0 {
			p.Addf(path+"."+key, "must not be negative, not %s", d)
		}
	}
	if l.LoginGraceTime <= 0 {
		p.Addf(path+".login_grace_time", "must be positive, not %s", l.LoginGraceTime)
	}
	pos("max_auth_tries", l.MaxAuthTries)
	pos("max_startups", l.MaxStartups)
	pos("max_conns_per_source", l.MaxConnsPerSource)
	pos("max_sessions_per_conn", l.MaxSessionsPerConn)
	pos("max_sessions_per_user", l.MaxSessionsPerUser)
	pos("max_channels_per_conn", l.MaxChannelsPerConn)
	nonneg("keepalive_interval", l.KeepaliveInterval)
	if l.KeepaliveInterval > 0 {
		pos("keepalive_count_max", l.KeepaliveCountMax)
	}
	nonneg("idle_timeout", l.IdleTimeout)
	nonneg("max_session_duration", l.MaxSessionDuration)
	nonneg("shutdown_grace", l.ShutdownGrace)
}

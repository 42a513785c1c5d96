package ldap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
)

// Directory is an auth.Directory backed by LDAP. It is safe for concurrent
// use. Close it to stop its lookups and close its connections.
type Directory struct {
	cfg   config.LDAP
	log   *slog.Logger
	pool  *pool
	users *cache[*auth.User]
	tools *cache[*auth.Account]

	userBase, toolBase string
	groupBases         []string
	toolGroupBase      *ldap.DN
	timeLimit          int // seconds

	fetches atomic.Int64 // lookups that went to LDAP, for tests
	blocked atomic.Bool  // the kill-switch file existed at the last lookup
	keyWarn auth.KeyWarnings
}

var _ auth.Directory = (*Directory)(nil)

// New makes a Directory from a validated config. It does not connect (a
// server may be down at start); it fails when the CA file or the bind
// password file cannot be read. A nil log discards.
func New(cfg config.LDAP, log *slog.Logger) (*Directory, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.URLs) == 0 {
		return nil, errors.New("ldap: no server URLs")
	}
	var servers []server
	for _, u := range cfg.URLs {
		s, err := parseServer(u)
		if err != nil {
			return nil, err
		}
		s.index = len(servers)
		servers = append(servers, s)
	}
	ca := &caFile{path: cfg.CAFile, log: log}
	if _, err := ca.load(); err != nil {
		return nil, err
	}
	if cfg.BindDN != "" {
		if _, err := readPassword(cfg.BindPasswordFile); err != nil {
			return nil, fmt.Errorf("ldap: %w", err)
		}
	}
	toolGroupBase, err := ldap.ParseDN(cfg.DN(cfg.ToolGroupBase))
	if err != nil {
		return nil, fmt.Errorf("ldap tool_group_base: %w", err)
	}
	d := &Directory{
		cfg:           cfg,
		log:           log,
		pool:          newPool(cfg, servers, ca, log),
		userBase:      cfg.DN(cfg.UserBase),
		toolBase:      cfg.DN(cfg.ToolBase),
		toolGroupBase: toolGroupBase,
		timeLimit:     int((cfg.TimeLimit + time.Second - 1) / time.Second),
	}
	for _, b := range cfg.GroupBases {
		d.groupBases = append(d.groupBases, cfg.DN(b))
	}
	// A lookup may try every server (connect, then search), once more
	// after a broken pooled connection.
	budget := time.Duration(len(servers)+1) * (cfg.DialTimeout + cfg.Timeout)
	opts := cacheOptions{ttl: cfg.CacheTTL, stale: cfg.StaleIfError, staleWait: cfg.StaleWait,
		neg: cfg.NegativeTTL, max: cfg.CacheMaxEntries, budget: budget}
	d.users = newCache[*auth.User]("user", opts, log)
	d.tools = newCache[*auth.Account]("tool", opts, log)
	d.users.down, d.tools.down = d.pool.allDown, d.pool.allDown
	if !cfg.StartTLS && cfg.BindDN != "" {
		for _, s := range servers {
			if s.scheme == "ldap" {
				log.Warn("ldap.start_tls is off: the bind password crosses the network in clear text", "server", s.url)
			}
		}
	}
	log.Info("ldap directory", "urls", cfg.URLs, "user_base", d.userBase, "bind_dn", cfg.DN(cfg.BindDN),
		"cache_ttl", cfg.CacheTTL.String(), "stale_if_error", cfg.StaleIfError.String(),
		"timeout", cfg.Timeout.String(), "dial_timeout", cfg.DialTimeout.String(), "stale_wait", cfg.StaleWait.String())
	return d, nil
}

// LookupUser returns person name with keys, groups and tools. Errors wrap
// auth.ErrNotFound (also for names that are not valid login names, which
// never reach LDAP), auth.ErrUnavailable, auth.ErrInvalidEntry or
// auth.ErrBlocked.
func (d *Directory) LookupUser(ctx context.Context, name string) (*auth.User, error) {
	if err := d.checkKillSwitch(); err != nil {
		return nil, err
	}
	if err := auth.ValidName(name); err != nil {
		return nil, fmt.Errorf("ldap user %q: %w (%v)", truncate(name), auth.ErrNotFound, err)
	}
	u, err := d.users.get(ctx, name, func(ctx context.Context) (*auth.User, error) { return d.fetchUser(ctx, name) })
	if err != nil {
		return nil, err
	}
	c := *u
	c.GIDs = slices.Clone(u.GIDs)
	c.Groups = slices.Clone(u.Groups)
	c.Tools = slices.Clone(u.Tools)
	c.Keys = slices.Clone(u.Keys)
	return &c, nil
}

// LookupTool returns the POSIX identity of tool account tool (short name,
// "mytool"); its Name is the account's uid ("tools.mytool"). Errors as for
// LookupUser.
func (d *Directory) LookupTool(ctx context.Context, tool string) (*auth.Account, error) {
	if err := d.checkKillSwitch(); err != nil {
		return nil, err
	}
	if err := auth.ValidName(tool); err != nil {
		return nil, fmt.Errorf("ldap tool %q: %w (%v)", truncate(tool), auth.ErrNotFound, err)
	}
	a, err := d.tools.get(ctx, tool, func(ctx context.Context) (*auth.Account, error) { return d.fetchTool(ctx, tool) })
	if err != nil {
		return nil, err
	}
	c := *a
	c.GIDs = slices.Clone(a.GIDs)
	return &c, nil
}

// checkKillSwitch returns an error wrapping auth.ErrBlocked while logins
// are switched off by ldap.kill_switch or by the kill-switch file.
func (d *Directory) checkKillSwitch() error {
	if d.cfg.KillSwitch {
		return fmt.Errorf("ldap: logins switched off by ldap.kill_switch: %w", auth.ErrBlocked)
	}
	if d.cfg.KillSwitchFile == "" {
		return nil
	}
	_, err := os.Stat(d.cfg.KillSwitchFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if d.blocked.Swap(false) {
			d.log.Warn("ldap kill-switch file removed; logins allowed again", "file", d.cfg.KillSwitchFile)
		}
		return nil
	case err != nil:
		// Fail closed: we cannot tell whether the operator wants logins.
		d.log.Error("ldap kill-switch file cannot be checked; refusing logins", "file", d.cfg.KillSwitchFile, "err", err)
		return fmt.Errorf("ldap: check kill-switch file: %w: %w", auth.ErrBlocked, err)
	default:
		if !d.blocked.Swap(true) {
			d.log.Warn("ldap kill-switch file exists; refusing every LDAP login", "file", d.cfg.KillSwitchFile)
		}
		return fmt.Errorf("ldap: logins switched off by %s: %w", d.cfg.KillSwitchFile, auth.ErrBlocked)
	}
}

// Ping reads the root DSE of a server, through the pool: readiness asks it
// so that a replica whose LDAP servers are all gone is taken out of
// rotation (cached answers still serve the replica's live users).
func (d *Directory) Ping(ctx context.Context) error {
	return d.pool.do(ctx, func(ctx context.Context, c *conn) error {
		_, err := c.search(ctx, ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases,
			1, 5, false, "(objectClass=*)", []string{"supportedLDAPVersion"}, nil))
		return err
	})
}

// Close stops the lookups in flight and closes the connections.
func (d *Directory) Close() {
	d.users.close()
	d.tools.close()
	d.pool.close()
}

// truncate shortens a rejected name for an error message.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

package ldap

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/bastion-ssh/bastion/auth"
)

var (
	accountAttrs = []string{"uid", "uidNumber", "gidNumber", "homeDirectory", "loginShell"}
	userAttrs    = append(slices.Clone(accountAttrs), "sshPublicKey")
	groupAttrs   = []string{"cn", "gidNumber"}
)

// request builds a subtree search with the configured limits. Aliases are
// not dereferenced; referrals are never chased (they are ignored, or fail
// the search when the base itself is one).
func (d *Directory) request(base, filter string, sizeLimit int, attrs []string) *ldap.SearchRequest {
	return &ldap.SearchRequest{
		BaseDN:           base,
		Scope:            ldap.ScopeWholeSubtree,
		DerefAliases:     ldap.NeverDerefAliases,
		SizeLimit:        sizeLimit,
		TimeLimit:        d.timeLimit,
		Filter:           filter,
		Attributes:       attrs,
		EnforceSizeLimit: true,
	}
}

// found is what one lookup read: the matching entries (at most 2) and, when
// exactly one matched, its groups.
type found struct {
	entries []*ldap.Entry
	groups  []*ldap.Entry
}

// find searches base for filter and the groups of the single match, on one
// pooled connection. memberName gives the name matched against memberUid.
func (d *Directory) find(ctx context.Context, base, filter string, attrs []string, memberName func(*ldap.Entry) string) (found, error) {
	d.fetches.Add(1)
	var f found
	err := d.pool.do(ctx, func(ctx context.Context, c *conn) error {
		f = found{}
		res, err := c.search(ctx, d.request(base, filter, 2, attrs))
		if res != nil {
			f.entries = res.Entries
		}
		if err != nil && !isCode(err, ldap.LDAPResultSizeLimitExceeded) && !errors.Is(err, ldap.ErrSizeLimitExceeded) {
			return err
		}
		if len(f.entries) != 1 {
			return nil
		}
		f.groups, err = d.groups(ctx, c, f.entries[0].DN, memberName(f.entries[0]))
		return err
	})
	return f, err
}

// groups returns the groups of member (by DN or by memberUid name) under
// every group base, each once.
func (d *Directory) groups(ctx context.Context, c *conn, dn, name string) ([]*ldap.Entry, error) {
	filter := d.cfg.Filter(d.cfg.GroupFilter, map[string]string{"dn": dn, "name": name})
	seen := map[string]bool{}
	var groups []*ldap.Entry
	for _, base := range d.groupBases {
		res, err := c.search(ctx, d.request(base, filter, d.cfg.SizeLimit, groupAttrs))
		if isCode(err, ldap.LDAPResultNoSuchObject) {
			d.log.Warn("ldap group base does not exist; skipping it (check ldap.group_bases)", "base", base)
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, g := range res.Entries {
			if k := strings.ToLower(g.DN); !seen[k] {
				seen[k] = true
				groups = append(groups, g)
			}
		}
	}
	return groups, nil
}

// fetchUser reads person name from LDAP.
func (d *Directory) fetchUser(ctx context.Context, name string) (*auth.User, error) {
	filter := d.cfg.Filter(d.cfg.UserFilter, map[string]string{"name": name})
	f, err := d.find(ctx, d.userBase, filter, userAttrs, func(*ldap.Entry) string { return name })
	if err != nil {
		return nil, d.failed("user", name, err)
	}
	e, err := d.single("user", name, f.entries)
	if err != nil {
		return nil, err
	}
	// uid matches case-insensitively in LDAP; a login name must be exact.
	if !slices.Contains(e.GetAttributeValues("uid"), name) {
		d.log.Debug("ldap entry matches a login name only by case; refused", "user", name, "dn", e.DN)
		return nil, fmt.Errorf("ldap user %q: %w", name, auth.ErrNotFound)
	}
	acct, err := d.account("user", name, e)
	if err != nil {
		return nil, err
	}
	acct.Name = name
	u := &auth.User{Account: *acct}
	u.Keys = parseKeys(d.log, &d.keyWarn, name, e.DN, e.GetRawAttributeValues("sshPublicKey"))
	if len(u.Keys) == 0 {
		d.log.Warn("ldap user has no usable SSH key", "user", name, "dn", e.DN)
	}
	for _, g := range f.groups {
		cn := groupName(g)
		if cn == "" {
			continue
		}
		u.Groups = append(u.Groups, cn)
		if tool, ok := d.toolOf(g, cn); ok {
			u.Tools = append(u.Tools, tool)
		}
	}
	u.GIDs = gids(f.groups, u.GID)
	slices.Sort(u.Groups)
	u.Groups = slices.Compact(u.Groups)
	slices.Sort(u.Tools)
	u.Tools = slices.Compact(u.Tools)
	return u, nil
}

// fetchTool reads tool account tool (its short name) from LDAP.
func (d *Directory) fetchTool(ctx context.Context, tool string) (*auth.Account, error) {
	filter := d.cfg.Filter(d.cfg.ToolFilter, map[string]string{"name": tool})
	f, err := d.find(ctx, d.toolBase, filter, accountAttrs, func(e *ldap.Entry) string { return e.GetAttributeValue("uid") })
	if err != nil {
		return nil, d.failed("tool", tool, err)
	}
	e, err := d.single("tool", tool, f.entries)
	if err != nil {
		return nil, err
	}
	acct, err := d.account("tool", tool, e)
	if err != nil {
		return nil, err
	}
	acct.Name = e.GetAttributeValue("uid")
	if err := auth.ValidName(acct.Name); err != nil {
		d.log.Error("ldap tool account has an unusable uid", "tool", tool, "dn", e.DN, "err", err)
		return nil, fmt.Errorf("ldap tool %q: uid %q: %w", tool, acct.Name, auth.ErrInvalidEntry)
	}
	acct.GIDs = gids(f.groups, acct.GID)
	return acct, nil
}

// failed turns an LDAP failure into an error wrapping auth.ErrUnavailable
// or, when a group search hit the size limit, auth.ErrInvalidEntry.
func (d *Directory) failed(kind, name string, err error) error {
	switch {
	case isCode(err, ldap.LDAPResultSizeLimitExceeded) || errors.Is(err, ldap.ErrSizeLimitExceeded):
		d.log.Error("ldap: too many groups (over ldap.size_limit or the server's limit); refusing", kind, name, "err", err)
		return fmt.Errorf("ldap %s %q: too many groups: %w", kind, name, auth.ErrInvalidEntry)
	case isCode(err, ldap.LDAPResultNoSuchObject):
		d.log.Error("ldap search base does not exist (check ldap.user_base and ldap.tool_base)", kind, name, "err", err)
	case isCode(err, ldap.LDAPResultInvalidCredentials):
		d.log.Error("ldap bind refused: check ldap.bind_dn and the password file", kind, name, "err", err)
	}
	return fmt.Errorf("ldap %s %q: %w: %w", kind, name, auth.ErrUnavailable, err)
}

// single returns the one entry a lookup must find.
func (d *Directory) single(kind, name string, entries []*ldap.Entry) (*ldap.Entry, error) {
	switch len(entries) {
	case 0:
		return nil, fmt.Errorf("ldap %s %q: %w", kind, name, auth.ErrNotFound)
	case 1:
		return entries[0], nil
	default:
		d.log.Error("ldap: several entries match; refusing (check the filter template)", kind, name,
			"dns", []string{entries[0].DN, entries[1].DN})
		return nil, fmt.Errorf("ldap %s %q: several entries match: %w", kind, name, auth.ErrInvalidEntry)
	}
}

// account maps the POSIX attributes of e. Missing or bad uidNumber,
// gidNumber or homeDirectory make the entry unusable; so does uid or gid
// 0, which would run sessions as root.
func (d *Directory) account(kind, name string, e *ldap.Entry) (*auth.Account, error) {
	var problems []string
	num := func(attr string) int {
		v := e.GetAttributeValue(attr)
		if v == "" {
			problems = append(problems, "missing "+attr)
			return 0
		}
		n, err := strconv.Atoi(v)
		switch {
		case err != nil || n < 0:
			problems = append(problems, fmt.Sprintf("%s %q is not a number", attr, v))
		case n == 0:
			problems = append(problems, attr+" is 0 (root)")
		}
		return n
	}
	a := &auth.Account{
		UID:   num("uidNumber"),
		GID:   num("gidNumber"),
		Home:  e.GetAttributeValue("homeDirectory"),
		Shell: e.GetAttributeValue("loginShell"),
	}
	if a.Home == "" {
		problems = append(problems, "missing homeDirectory")
	} else if !strings.HasPrefix(a.Home, "/") {
		problems = append(problems, fmt.Sprintf("homeDirectory %q is not absolute", a.Home))
	}
	if len(problems) > 0 {
		msg := strings.Join(problems, ", ")
		d.log.Error("ldap entry cannot be used for a login: "+msg, kind, name, "dn", e.DN)
		return nil, fmt.Errorf("ldap %s %q: %s: %w", kind, name, msg, auth.ErrInvalidEntry)
	}
	return a, nil
}

// toolOf tells whether group g (named cn) makes its members maintainers of
// a tool: it is under the tool group base and named prefix+tool.
func (d *Directory) toolOf(g *ldap.Entry, cn string) (string, bool) {
	tool, ok := strings.CutPrefix(cn, d.cfg.ToolGroupPrefix)
	if !ok || auth.ValidName(tool) != nil {
		return "", false
	}
	dn, err := ldap.ParseDN(g.DN)
	if err != nil || !d.toolGroupBase.AncestorOfFold(dn) {
		return "", false
	}
	return tool, true
}

// groupName is a group's cn, or its RDN value.
func groupName(g *ldap.Entry) string {
	if cn := g.GetAttributeValue("cn"); cn != "" {
		return cn
	}
	dn, err := ldap.ParseDN(g.DN)
	if err != nil || len(dn.RDNs) == 0 || len(dn.RDNs[0].Attributes) == 0 {
		return ""
	}
	return dn.RDNs[0].Attributes[0].Value
}

// gids returns the sorted gidNumbers of the groups that have one, except
// primary and 0.
func gids(groups []*ldap.Entry, primary int) []int {
	var out []int
	for _, g := range groups {
		n, err := strconv.Atoi(g.GetAttributeValue("gidNumber"))
		if err == nil && n > 0 && n != primary {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func isCode(err error, code uint16) bool {
	var le *ldap.Error
	return errors.As(err, &le) && le.ResultCode == code
}

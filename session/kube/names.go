package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/config"
)

// maxName is the longest pod or namespace name bastion makes (a DNS
// label, so the pod's host name is its name).
const maxName = 63

func hashOf(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}

// dnsSafe maps s to lower-case letters, digits and '-', with no '-' at
// either end and none doubled. It reports whether s came through as it
// was.
func dnsSafe(s string) (string, bool) {
	var b strings.Builder
	same := true
	dash := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteByte(c)
			dash = false
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
			same = false
			dash = false
		case c == '-':
			if !dash && b.Len() > 0 {
				b.WriteByte('-')
			} else {
				same = false
			}
			dash = true
		default:
			same = false
			if !dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = true
		}
	}
	out := strings.TrimRight(b.String(), "-")
	if out != s {
		same = false
	}
	return out, same
}

// podName is the deterministic name of acct's shell pod in a project:
// "shell-" + the account name made DNS-safe + a hash of the exact name
// and project, so that "Alice", "alice" and "a.lice"/"a-lice" never share
// a pod.
func podName(project, account string) string {
	base, _ := dnsSafe(account)
	suffix := hashOf(project+"\x00"+account, 10)
	room := maxName - len("shell-") - 1 - len(suffix)
	if len(base) > room {
		base = strings.TrimRight(base[:room], "-")
	}
	if base == "" {
		return "shell-" + suffix
	}
	return "shell-" + base + "-" + suffix
}

// labelValue makes s a valid label value (for display only).
func labelValue(s string) string {
	v, _ := dnsSafe(s)
	if len(v) > maxName {
		v = strings.TrimRight(v[:maxName], "-")
	}
	return v
}

// identity is what templates know about the account of a request.
type identity struct {
	acct    auth.Account
	isTool  bool
	short   string // the tool's name, or the person's login name
	project string
}

// who classifies r's account: a tool (the account is not the person who
// logged in) or the person.
func who(u *auth.User, acct auth.Account, toolPrefix, project string) identity {
	id := identity{acct: acct, short: acct.Name, project: project}
	if u != nil && acct.Name != u.Name {
		id.isTool = true
		id.short = strings.TrimPrefix(acct.Name, toolPrefix)
	}
	return id
}

// namePart is the account's short name for a namespace: as it is when it
// is DNS-safe, otherwise made safe and suffixed with a hash, so that two
// names differing only in case or punctuation get different namespaces.
func namePart(short string) string {
	safe, same := dnsSafe(short)
	if same && safe != "" {
		return safe
	}
	h := hashOf(short, 6)
	if safe == "" {
		return h
	}
	return safe + "-" + h
}

// namespaceFor expands the cluster's namespace template for id.
func namespaceFor(c config.KubeCluster, id identity) string {
	tmpl := c.UserNamespace()
	if id.isTool {
		tmpl = c.ToolNamespace()
	}
	return expandNamespace(tmpl, c.Name, id.short)
}

func expandNamespace(tmpl, project, short string) string {
	part := namePart(short)
	ns := strings.NewReplacer("{account}", part, "{name}", part, "{project}", project).Replace(tmpl)
	if len(ns) > maxName {
		// Keep it unique: cut and add a hash of the whole.
		h := hashOf(ns, 8)
		ns = strings.TrimRight(ns[:maxName-9], "-") + "-" + h
	}
	return ns
}

// expandPath expands a home volume template.
func expandPath(tmpl string, id identity) string {
	return strings.NewReplacer(
		"{account}", id.short, "{name}", id.short, "{project}", id.project,
		"{home}", strings.TrimSuffix(id.acct.Home, "/"), "{uid}", strconv.Itoa(id.acct.UID),
	).Replace(tmpl)
}

// projectOf chooses u's project: the first cluster (in config order) for
// which u is in a group matching the pattern, else the default.
func projectOf(cfg *config.Kube, u *auth.User) (string, bool) {
	if pat := cfg.ProjectGroupPattern; pat != "" && u != nil {
		prefix, suffix, _ := strings.Cut(pat, "{project}")
		member := map[string]bool{}
		for _, g := range u.Groups {
			if strings.HasPrefix(g, prefix) && strings.HasSuffix(g, suffix) && len(g) > len(prefix)+len(suffix) {
				member[g[len(prefix):len(g)-len(suffix)]] = true
			}
		}
		for _, c := range cfg.Clusters {
			if member[c.Name] {
				return c.Name, true
			}
		}
	}
	if cfg.DefaultProject != "" {
		return cfg.DefaultProject, true
	}
	return "", false
}

// target is a parsed in-cluster ssh -L destination.
type target struct {
	name      string // Service or pod
	namespace string // empty: the account's own namespace
}

// parseTarget reads NAME, NAME.NAMESPACE, NAME.NAMESPACE.svc and
// NAME.NAMESPACE.svc.DOMAIN. shapes tells which two-label names are
// in-cluster: those whose second label could come from a namespace
// template. ok is false for anything else (an IP, a host name), which is
// then dialled from the bastion under forwarding.allow.
func parseTarget(host, domain string, shapes []nsShape) (target, bool) {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	explicit := false
	for _, suf := range []string{".svc." + domain, ".svc"} {
		if strings.HasSuffix(h, suf) {
			h = strings.TrimSuffix(h, suf)
			explicit = true
			break
		}
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if !validLabel(l) {
			return target{}, false
		}
	}
	switch {
	case len(labels) == 1 && !explicit:
		if h == "localhost" {
			return target{}, false
		}
		return target{name: h}, true
	case len(labels) == 2:
		if !explicit {
			matched := false
			for _, s := range shapes {
				if s.match(labels[1]) {
					matched = true
					break
				}
			}
			if !matched {
				return target{}, false
			}
		}
		return target{name: labels[0], namespace: labels[1]}, true
	}
	return target{}, false
}

func validLabel(l string) bool {
	if l == "" || len(l) > maxName {
		return false
	}
	safe, same := dnsSafe(l)
	return same && safe == l
}

// nsShape is what a namespace template looks like around its account
// part: tool-{account} makes names starting "tool-".
type nsShape struct{ prefix, suffix, exact string }

func shapeOf(tmpl, project string) nsShape {
	t := strings.ReplaceAll(tmpl, "{project}", project)
	t = strings.ReplaceAll(t, "{name}", "{account}")
	prefix, suffix, found := strings.Cut(t, "{account}")
	if !found {
		return nsShape{exact: t}
	}
	return nsShape{prefix: prefix, suffix: suffix}
}

func (s nsShape) match(ns string) bool {
	if s.exact != "" {
		return ns == s.exact
	}
	return len(ns) > len(s.prefix)+len(s.suffix) && strings.HasPrefix(ns, s.prefix) && strings.HasSuffix(ns, s.suffix)
}

// Package ldap is the auth.Directory of people and tool accounts kept in
// OpenLDAP, laid out as on Toolforge: people (posixAccount +
// ldapPublicKey) with their SSH keys, groups by member DN and memberUid,
// tool groups "tools.TOOL" that make their members maintainers of tool
// account TOOL, and the tool accounts' own POSIX entries.
//
// What it owns:
//   - a small pool of connections (pool.go) over several servers tried in
//     order (ldap:// with StartTLS or ldaps://), with a CA file and a bind
//     password file that are re-read when they change (tls.go), dial and
//     per-server timeouts well inside a login's wait, broken connections
//     replaced, and failed or hung servers tried last and by one probe at
//     a time until they answer again (the pool also probes them itself, so
//     that the log and bastion_ldap_server_up/_hung tell when they do);
//   - a cache (cache.go): answers reused for cache_ttl, lookups of the same
//     name in flight coalesced into one search, "not found" remembered
//     briefly, and the last good answer served for stale_if_error when no
//     server answers, or none has answered within stale_wait;
//   - the searches and the mapping of entries to auth.User and
//     auth.Account (search.go, keys.go);
//   - the kill switch (a config key and a file).
//
// Every name is checked with auth.ValidName and escaped into filters;
// referrals are never chased; searches carry size and time limits.
//
// It must not know about SSH connections or sessions, log secrets, or
// let an LDAP protocol error reach a user: errors wrap the auth sentinels.
//
// It must not import sshd, session or k8s.io/client-go.
package ldap

// Package slapd starts throwaway OpenLDAP servers for tests: a real
// /usr/sbin/slapd (Debian's slapd package) with a slapd.conf generated in
// the test's temporary directory, the core, cosine, nis and inetorgperson
// schemas plus the OpenSSH-LPK schema from integration/testdata, the
// ppolicy module (for pwdPolicySubentry), and a database seeded with
// slapadd from a templated LDIF (integration/testdata/toolforge.ldif by
// default). TLS (ldaps:// and StartTLS) is served with certificates from a
// CA the test makes with NewCA.
//
// Test SSH keys are deterministic (Key, AuthorizedKey, Signer): the LDIF
// refers to them by name, and a test or an ssh client can use the private
// half without any state being shared.
//
// Every server is stopped by t.Cleanup. When slapd is not installed, Start
// skips the test under -short and fails it otherwise.
//
// It is for tests only: non-test code must not import it. It must not
// import other bastion packages.
package slapd

// Package static is a Directory read from a YAML users file: the dev
// directory that `bastion dev` writes into its state directory, and a
// simple option for small installs and tests.
//
// Keys come inline or from authorized_keys-style files, which are re-read
// when they change. It must not do network I/O.
//
// It must not import sshd, session, auth/ldap or github.com/go-ldap/ldap/v3.
package static

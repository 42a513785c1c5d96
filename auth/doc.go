// Package auth defines who may log in: the User and Account types, the
// Directory seam that looks them up, the sentinel errors that drive login
// decisions, and the parser for login names ("alice", "alice+mytool").
//
// Implementations live in sub-packages: auth/static (a YAML file, used by
// `bastion dev`) and auth/ldap (OpenLDAP). This package must not know about
// SSH channels, sessions or backends; it only answers "who is this?".
package auth

// Package auth decides who may log in and as which account.
//
// It defines the User and Account types, the Directory seam that looks
// them up, the sentinel errors that drive login decisions and the parser
// for login names ("alice", "alice+mytool"); authorized_keys lines with
// their options (ParseAuthorizedKey, KeyOptions, with OpenSSH's
// semantics); user certificates and revocation lists (Trust,
// Revocations); the one decision of whether a key or certificate lets a
// person in and with which Restrictions (Trust.Authenticate); and the one
// decision of which account a person may act as (ActAs: their own, or a
// tool they maintain, for alice+tool logins and become).
//
// Implementations of Directory live in sub-packages: auth/static (a YAML
// file, used by `bastion dev`) and auth/ldap (OpenLDAP). This package uses
// golang.org/x/crypto/ssh only for its key and certificate types, and
// knows nothing of SSH channels: it decides, sshd enforces. It must not
// import sshd, session, session/local, session/kube, auth/ldap or
// auth/static.
package auth

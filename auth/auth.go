package auth

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors. Directories wrap them; callers decide with errors.Is.
var (
	// ErrNotFound: no such user or tool (or the entry does not match the
	// login filter, e.g. a disabled account). Callers must not tell the
	// client which of "unknown user" and "wrong key" happened.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable: the directory could not be asked (all servers down,
	// timeout). The user is told "directory unavailable, try again".
	ErrUnavailable = errors.New("directory unavailable")
	// ErrBlocked: logins through this directory are switched off by the
	// operator (kill switch).
	ErrBlocked = errors.New("logins are disabled by the operator")
	// ErrInvalidEntry: the entry exists but cannot be used (missing
	// uidNumber or homeDirectory, ...).
	ErrInvalidEntry = errors.New("invalid directory entry")
)

// Account is a POSIX identity a process can run as: a person or a tool.
type Account struct {
	Name  string
	UID   int
	GID   int
	Home  string
	Shell string
	// GIDs are supplementary group ids (may be empty).
	GIDs []int
}

// User is a person who authenticates with one of Keys.
type User struct {
	Account
	// Groups are the names of the groups the user belongs to.
	Groups []string
	// Tools are the tool accounts the user maintains and may become.
	Tools []string
	// Keys are the user's authorized keys, with their options and where
	// each came from. Keys whose line could not be used are not here.
	Keys []AuthorizedKey
}

// Maintains reports whether u may act as tool account tool.
func (u *User) Maintains(tool string) bool {
	for _, t := range u.Tools {
		if t == tool {
			return true
		}
	}
	return false
}

// Directory looks up people and tool accounts.
type Directory interface {
	// LookupUser returns the person called name, with keys and groups.
	// Errors wrap ErrNotFound, ErrUnavailable, ErrBlocked or ErrInvalidEntry.
	LookupUser(ctx context.Context, name string) (*User, error)
	// LookupTool returns the POSIX identity of tool account tool (its
	// short name, e.g. "mytool"). Errors as for LookupUser.
	LookupTool(ctx context.Context, tool string) (*Account, error)
}

// UserMessage returns the one line an SSH user should read for a
// directory error, hiding protocol detail.
func UserMessage(err error) string {
	switch {
	case errors.Is(err, ErrBlocked):
		return "logins are temporarily disabled by the operators; try again later"
	case errors.Is(err, ErrUnavailable):
		return "directory unavailable, try again"
	case errors.Is(err, ErrInvalidEntry):
		return "your account is not set up for shell access; contact the operators"
	default:
		return fmt.Sprintf("login failed: %v", err)
	}
}

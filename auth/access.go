package auth

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotMaintainer: the person may not act as the tool account.
var ErrNotMaintainer = errors.New("not a maintainer of the tool")

// ActAs is the one place that decides which account person u may act as:
// tool "" is u's own account; otherwise tool must be a valid tool name,
// exist in dir, and be maintained by u. It serves `alice+tool` logins
// (decided at authentication, so that a refused tool login never gets
// in) and `become TOOL`. Errors wrap ErrNotFound (no such tool),
// ErrNotMaintainer, or the directory's ErrUnavailable / ErrBlocked /
// ErrInvalidEntry.
func ActAs(ctx context.Context, dir Directory, u *User, tool string) (Account, error) {
	if tool == "" {
		return u.Account, nil
	}
	if err := ValidName(tool); err != nil {
		return Account{}, fmt.Errorf("tool name %q: %w (%v)", clip(tool, MaxNameLen), ErrNotFound, err)
	}
	a, err := dir.LookupTool(ctx, tool)
	if err != nil {
		return Account{}, err // directories name the tool in their errors
	}
	if !u.Maintains(tool) {
		return Account{}, fmt.Errorf("%s may not act as tool %s: %w", u.Name, tool, ErrNotMaintainer)
	}
	return *a, nil
}

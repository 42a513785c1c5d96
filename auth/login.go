package auth

import (
	"fmt"
	"strings"
)

// MaxNameLen bounds user and tool names (POSIX login names are short;
// Toolforge tool names are at most 32 characters).
const MaxNameLen = 64

// Login is a parsed SSH login name: "alice" or "alice+mytool".
type Login struct {
	User string
	Tool string // empty unless the login was user+tool
}

// ParseLogin validates and splits an SSH login name. It accepts
// "user" and "user+tool" where each part is a valid name (see ValidName).
func ParseLogin(s string) (Login, error) {
	user, tool, hasTool := strings.Cut(s, "+")
	if err := ValidName(user); err != nil {
		return Login{}, fmt.Errorf("user name: %w", err)
	}
	if hasTool {
		if err := ValidName(tool); err != nil {
			return Login{}, fmt.Errorf("tool name: %w", err)
		}
	}
	return Login{User: user, Tool: tool}, nil
}

// ValidName checks a user or tool name before it is used anywhere (an
// LDAP filter, a pod name, a log line): 1 to MaxNameLen characters from
// [A-Za-z0-9._-], starting with a letter, digit or underscore.
func ValidName(s string) error {
	if s == "" {
		return fmt.Errorf("empty name")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("name longer than %d characters", MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case (c == '.' || c == '-') && i > 0:
		default:
			return fmt.Errorf("character %q at position %d is not allowed in a name", c, i)
		}
	}
	return nil
}

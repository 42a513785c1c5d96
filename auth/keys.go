package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// AuthorizedKey is one key a person may log in with (or, with
// Options.CertAuthority, a CA whose certificates they may log in with),
// with the options of its authorized_keys line and where it came from.
type AuthorizedKey struct {
	Key     ssh.PublicKey
	Options KeyOptions
	// Source names the line for operators: "FILE:LINE", or an LDAP DN
	// and the position of the sshPublicKey value.
	Source string
}

// ParseAuthorizedKey parses one authorized_keys line: [options] keytype
// base64 [comment], as OpenSSH reads it. source is kept for log lines and
// the audit log. An error means the key must not be used; one wrapping
// ErrUnsupportedOption names an option bastion does not implement.
func ParseAuthorizedKey(line []byte, source string) (AuthorizedKey, error) {
	line = bytes.TrimSpace(line)
	if len(line) > MaxKeyLine {
		return AuthorizedKey{}, fmt.Errorf("line longer than %d bytes", MaxKeyLine)
	}
	if bytes.ContainsAny(line, "\r\n") {
		return AuthorizedKey{}, errors.New("more than one line")
	}
	// A line that starts with a key type has no options.
	if k, _, opts, rest, err := ssh.ParseAuthorizedKey(line); err == nil && len(opts) == 0 && len(bytes.TrimSpace(rest)) == 0 {
		return AuthorizedKey{Key: k, Source: source}, nil
	}
	optText, keyText, err := splitOptions(line)
	if err != nil {
		return AuthorizedKey{}, err
	}
	k, _, opts, rest, err := ssh.ParseAuthorizedKey(keyText)
	if err != nil {
		return AuthorizedKey{}, fmt.Errorf("key: %w", err)
	}
	if len(opts) > 0 || len(bytes.TrimSpace(rest)) > 0 {
		return AuthorizedKey{}, errors.New("key: not a key after the options")
	}
	o, err := ParseKeyOptions(string(optText))
	if err != nil {
		return AuthorizedKey{}, &optionsError{err}
	}
	if _, isCert := k.(*ssh.Certificate); isCert {
		return AuthorizedKey{}, errors.New("a certificate is not an authorized key; list its CA with cert-authority")
	}
	return AuthorizedKey{Key: k, Options: o, Source: source}, nil
}

// optionsError is a line whose key parsed but whose options did not.
type optionsError struct{ err error }

func (e *optionsError) Error() string { return "options: " + e.err.Error() }
func (e *optionsError) Unwrap() error { return e.err }

// splitOptions splits "OPTIONS KEY..." at the first blank outside double
// quotes (OpenSSH's sshkey_advance_past_options).
func splitOptions(line []byte) (opts, rest []byte, err error) {
	quoted := false
	i := 0
	for ; i < len(line) && (quoted || (line[i] != ' ' && line[i] != '\t')); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '"':
			i++
		case line[i] == '"':
			quoted = !quoted
		}
	}
	if quoted {
		return nil, nil, errors.New("options: missing end quote")
	}
	return line[:i], bytes.TrimLeft(line[i:], " \t"), nil
}

// KeyWarnings logs each unusable key once per process (not at every
// lookup): the first time a given source and line are seen. It is bounded;
// past maxWarned entries it forgets and starts again.
type KeyWarnings struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

const maxWarned = 10000

// Warn logs msg for an unusable key unless this source and line were
// logged before.
func (w *KeyWarnings) Warn(log *slog.Logger, source string, line []byte, err error) {
	id := source + "\x00" + string(line)
	w.mu.Lock()
	if w.seen == nil || len(w.seen) >= maxWarned {
		w.seen = make(map[string]struct{})
	}
	_, dup := w.seen[id]
	w.seen[id] = struct{}{}
	w.mu.Unlock()
	if dup {
		return
	}
	msg := "SSH key skipped: it does not parse"
	var oe *optionsError
	switch {
	case errors.Is(err, ErrUnsupportedOption):
		msg = "SSH key skipped: it has an option bastion does not implement (fail closed)"
	case errors.As(err, &oe):
		msg = "SSH key skipped: its options are invalid"
	}
	log.Warn(msg, "source", source, "err", err.Error())
}

// eachKeyLine calls fn with each line of a key file (authorized_keys
// syntax: blank lines and # comments skipped, lines of at most
// MaxKeyLine bytes) and its 1-based number, stopping at fn's first error.
func eachKeyLine(data []byte, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxKeyLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("line %d: %w", n+1, err)
	}
	return nil
}

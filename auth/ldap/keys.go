package ldap

import (
	"bytes"
	"fmt"
	"log/slog"

	"github.com/bastion-ssh/bastion/auth"
)

// parseKeys parses the sshPublicKey values of the entry dn of user: one
// key per value, or several lines in one value (blank lines and #
// comments ignored), each an authorized_keys line whose options are
// honoured as in a file (auth.ParseAuthorizedKey). A line that does not
// parse, or that carries an option bastion does not implement, is
// skipped (fail closed) and logged once with the DN and the position;
// the other keys still work.
func parseKeys(log *slog.Logger, warn *auth.KeyWarnings, user, dn string, values [][]byte) []auth.AuthorizedKey {
	var keys []auth.AuthorizedKey
	for i, v := range values {
		lines := bytes.Split(v, []byte("\n"))
		for j, line := range lines {
			line = bytes.TrimSpace(line)
			if len(line) == 0 || line[0] == '#' {
				continue
			}
			pos := fmt.Sprintf("sshPublicKey[%d]", i)
			if len(lines) > 1 {
				pos = fmt.Sprintf("sshPublicKey[%d] line %d", i, j+1)
			}
			src := dn + " " + pos
			k, err := auth.ParseAuthorizedKey(line, src)
			if err != nil {
				warn.Warn(log.With("user", user, "dn", dn, "position", pos), src, line, err)
				continue
			}
			keys = append(keys, k)
		}
	}
	return keys
}

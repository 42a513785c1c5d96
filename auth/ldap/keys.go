package ldap

import (
	"bytes"
	"fmt"
	"log/slog"

	"golang.org/x/crypto/ssh"
)

// parseKeys parses the sshPublicKey values of user: one key per value, or
// several lines in one value (blank lines and # comments ignored). A line
// that does not parse, or that carries authorized_keys options (which the
// bastion would not enforce), is skipped with a warning naming the user
// and the position; the other keys still work.
func parseKeys(log *slog.Logger, user string, values [][]byte) []ssh.PublicKey {
	var keys []ssh.PublicKey
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
			key, _, options, rest, err := ssh.ParseAuthorizedKey(line)
			switch {
			case err != nil:
				log.Warn("ldap: skipping an SSH key that does not parse", "user", user, "position", pos, "err", err)
			case len(options) > 0:
				log.Warn("ldap: skipping an SSH key with authorized_keys options (not supported)", "user", user, "position", pos,
					"fingerprint", ssh.FingerprintSHA256(key))
			case len(bytes.TrimSpace(rest)) > 0:
				log.Warn("ldap: skipping an SSH key followed by more text", "user", user, "position", pos,
					"fingerprint", ssh.FingerprintSHA256(key))
			default:
				keys = append(keys, key)
			}
		}
	}
	return keys
}

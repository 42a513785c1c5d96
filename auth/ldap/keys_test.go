package ldap

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/integration/slapd"
)

func TestParseKeys(t *testing.T) {
	t.Parallel()
	k1, k2 := slapd.AuthorizedKey("k-1"), slapd.AuthorizedKey("k-2")
	tests := []struct {
		name   string
		values []string
		want   []string // key names
		warns  []string // positions warned about
	}{
		{"one per value", []string{k1, k2}, []string{"k-1", "k-2"}, nil},
		{"several lines in one value", []string{k1 + "\n" + k2 + "\n"}, []string{"k-1", "k-2"}, nil},
		{"CRLF, blanks and comments", []string{"# mine\r\n\r\n" + k1 + "\r\n  \n" + k2}, []string{"k-1", "k-2"}, nil},
		{"garbage value skipped", []string{"ssh-ed25519 !!!", k2}, []string{"k-2"}, []string{"position=sshPublicKey[0]"}},
		{"garbage line skipped", []string{k1 + "\nnonsense\n" + k2}, []string{"k-1", "k-2"}, []string{`position="sshPublicKey[0] line 2"`}},
		{"options kept", []string{`from="10.0.0.0/8" ` + k1, "command=\"/bin/true\" " + k2}, []string{"k-1", "k-2"}, nil},
		{"unsupported option refused", []string{`verify-required ` + k1, `tunnel="1" ` + k2}, nil,
			[]string{"does not implement", "position=sshPublicKey[0]", "position=sshPublicKey[1]", `dn="uid=alice`}},
		{"bad option refused", []string{`nonsense ` + k1, k2}, []string{"k-2"}, []string{"unknown key option", "position=sshPublicKey[0]"}},
		{"empty", []string{"", "\n\n"}, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := &logs{}
			var values [][]byte
			for _, v := range tt.values {
				values = append(values, []byte(v))
			}
			var warn auth.KeyWarnings
			log := slog.New(slog.NewTextHandler(l, nil))
			dn := "uid=alice,ou=people,dc=example,dc=org"
			keys := parseKeys(log, &warn, "alice", dn, values)
			// The same bad lines again (the next cache miss): no new warning.
			before := l.String()
			parseKeys(log, &warn, "alice", dn, values)
			if after := l.String(); after != before {
				t.Errorf("a skipped key was logged twice:\n%s", after)
			}
			var want []string
			for _, n := range tt.want {
				want = append(want, testKeys(n)...)
			}
			if got := keyStrings(keys); !slices.Equal(got, want) {
				t.Errorf("keys = %q, want %q", got, want)
			}
			for _, w := range tt.warns {
				l.mustContain(t, "level=WARN", "user=alice", w)
			}
			if len(tt.warns) == 0 && strings.Contains(l.String(), "WARN") {
				t.Errorf("unexpected warnings:\n%s", l.String())
			}
		})
	}
}

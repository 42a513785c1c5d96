package ldap

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

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
		{"options refused", []string{`from="10.0.0.0/8" ` + k1, "command=\"/bin/true\" " + k2}, nil,
			[]string{"options", "position=sshPublicKey[0]", "position=sshPublicKey[1]"}},
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
			keys := parseKeys(slog.New(slog.NewTextHandler(l, nil)), "alice", values)
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

package sshd

import (
	"errors"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestExitSignal checks the exit-signal request against what OpenSSH
// 9.2's sshd sends for the same commands (observed with asyncssh's
// exit_signal): RFC 4254 names as they are, every other signal as
// "SIG@openssh.com", and no exit-status (x/crypto then makes up 128+N
// for ExitStatus, which is not checked here).
func TestExitSignal(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	c := f.dial(t, f.user)
	defer c.Close()
	for _, tc := range []struct {
		cmd    string
		signal string
	}{
		{"kill -TERM $$", "TERM"},
		{"kill -KILL $$", "KILL"},
		{"kill -USR1 $$", "USR1"},
		{"kill -VTALRM $$", "SIG@openssh.com"}, // not in RFC 4254
		{"kill -BUS $$", "SIG@openssh.com"},
		{"kill -RTMIN $$", "SIG@openssh.com"}, // no name in Go
	} {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		err = s.Run(tc.cmd)
		s.Close()
		var ee *ssh.ExitError
		if !errors.As(err, &ee) || ee.Signal() != tc.signal {
			t.Errorf("%q: %v; want exit-signal %s", tc.cmd, err, tc.signal)
		}
	}
}

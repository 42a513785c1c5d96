package kube

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/session"
)

func TestNoticeTo(t *testing.T) {
	t.Parallel()
	var out, errOut strings.Builder
	noticeTo(session.Request{Stdout: &out, Stderr: &errOut, TTY: &session.TTY{}})("hello")
	noticeTo(session.Request{Stdout: &out, Stderr: &errOut})("there")
	if out.String() != "bastion: hello\r\n" || errOut.String() != "bastion: there\n" {
		t.Errorf("tty %q, stderr %q", out.String(), errOut.String())
	}
	if noticeTo(session.Request{}) != nil {
		t.Error("a notice with nowhere to go")
	}
	if _, ok := pullFailure(errors.New("x")); ok {
		t.Error("a plain error is a pull failure")
	}
}

func TestDetachedNotice(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int
		keep time.Duration
		want string
	}{
		{1, 7 * 24 * time.Hour, "1 detached process keeps your shell in tools running for up to 7 days after you log out"},
		{3, 24 * time.Hour, "3 detached processes keep your shell in tools running for up to 1 day after you log out"},
		{2, 36 * time.Hour, "2 detached processes keep your shell in tools running for up to 36 hours after you log out"},
		{2, 90 * time.Second, "2 detached processes keep your shell in tools running for up to 1m30s after you log out"},
	}
	for _, tt := range tests {
		if got := detachedNotice("tools", tt.n, tt.keep); got != tt.want {
			t.Errorf("detachedNotice(%d, %v) = %q, want %q", tt.n, tt.keep, got, tt.want)
		}
	}
}

package kube

import (
	"errors"
	"strings"
	"testing"

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

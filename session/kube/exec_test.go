package kube

import (
	"slices"
	"testing"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session"
)

func TestSessionCommand(t *testing.T) {
	t.Parallel()
	r := session.Request{
		Account: auth.Account{Name: "alice", Shell: "/bin/bash"},
		Command: "echo hi",
		Env:     map[string]string{"LANG": "C.UTF-8", "LC_ALL": "C", "HOME": "/evil", "BASTION_SESSION": "x", "BAD NAME": "1", "PATH": "/evil"},
		TTY:     &session.TTY{Term: "xterm"},
	}
	argv := sessionCommand(r, "tok", 100)
	want := []string{"/bin/sh", "-c", wrapperScript, "bastion-session", "tok", "/bin/bash", "echo hi", "100", "LANG=C.UTF-8", "LC_ALL=C", "TERM=xterm"}
	if !slices.Equal(argv, want) {
		t.Errorf("argv %q\nwant %q", argv[3:], want[3:])
	}
}

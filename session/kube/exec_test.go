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
	argv := sessionCommand(r, "tok", 100, false)
	want := []string{"/bin/sh", "-c", wrapperScript, "bastion-session", "tok", "/bin/bash", "echo hi", "100", "LANG=C.UTF-8", "LC_ALL=C", "TERM=xterm"}
	if !slices.Equal(argv, want) {
		t.Errorf("argv %q\nwant %q", argv[3:], want[3:])
	}
	argv = sessionCommand(r, "tok", 100, true)
	want = []string{"/.bastion/bastion-helper", "run", "tok", "/bin/bash", "echo hi", "100", "BASTION_EXIT_TRAILER=1", "LANG=C.UTF-8", "LC_ALL=C", "TERM=xterm"}
	if !slices.Equal(argv, want) {
		t.Errorf("helper argv %q\nwant %q", argv, want)
	}
}

func TestParseKilledBy(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]*session.ExitStatus{
		"TERM 0\n":   {Signal: "TERM"},
		"SEGV 1":     {Signal: "SEGV", CoreDumped: true},
		"VTALRM 0\n": {Signal: "VTALRM"},
		"34 0":       {Signal: "34"},
		"":           nil,
		"TERM":       nil,
		"TERM 2":     nil,
		"te rm 0":    nil,
		"$(x) 0":     nil,
	} {
		st, ok := parseKilledBy(in)
		if (want == nil) == ok || (want != nil && st != *want) {
			t.Errorf("parseKilledBy(%q) = %+v, %v; want %+v", in, st, ok, want)
		}
	}
}

package sshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/internal/hostile"
)

// Issue 11, item 3: env requests are capped per session (count and
// bytes) and validated; the command still runs.
func TestEnvLimits(t *testing.T) {
	f := newFixture(t, func(s *Settings) {
		s.Limits.MaxEnvVars = 8
		s.Limits.MaxEnvBytes = 4096
	})
	c := f.dial(t, f.user)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, value string
		want        bool
	}{
		{"LC_NUL", "a\x00b", false},
		{"LC_A=B", "x", false},
		{"LC_\x00", "x", false},
		{"LC_BIG", strings.Repeat("x", 5000), false},
		{"PATH", "/evil", false},
		{"LANG", "C.UTF-8", true},
		{"LANG", "en_GB.UTF-8", true}, // replacing is not a new variable
	} {
		if ok, err := hostile.Env(s, tt.name, tt.value); err != nil || ok != tt.want {
			t.Errorf("env %q (%d bytes): accepted %v, %v; want %v", tt.name, len(tt.value), ok, err, tt.want)
		}
	}
	// 4,000 requests of 1 KB: 7 more fit the count (LANG is one), and
	// the bytes cap (LANG's 15 bytes and 4 of 1,004) stops them first.
	n, err := hostile.EnvFlood(s, 4000, 1000, func(i int) string { return fmt.Sprintf("LC_%d", i) })
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("%d of 4000 env requests accepted; want 4 (max_env_bytes 4096)", n)
	}
	out, err := s.Output("env | grep -c '^LC_'; echo \"$LANG\"")
	if err != nil || string(out) != "4\nen_GB.UTF-8\n" {
		t.Fatalf("exec after the flood: %q, %v", out, err)
	}

	// The count cap, with small values.
	s2, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n, _ := hostile.EnvFlood(s2, 100, 1, func(i int) string { return fmt.Sprintf("LC_%d", i) }); n != 8 {
		t.Errorf("%d of 100 small env requests accepted; want 8 (max_env_vars)", n)
	}
	if strings.Count(f.logs.String(), "env requests refused past the session's limit") != 2 {
		t.Errorf("want one log line per capped session:\n%s", f.logs.String())
	}
}

// Issue 11, item 9: past max_auth_tries the client gets OpenSSH's
// disconnect (reason 2, too many authentication failures).
func TestTooManyAuthFailuresDisconnect(t *testing.T) {
	f := newFixture(t, nil)
	err := hostile.Dialer{Addr: f.addr}.FailAuth(f.user, 7)
	if err == nil || !strings.Contains(err.Error(), "disconnect, reason 2") ||
		!strings.Contains(strings.ToLower(err.Error()), "too many authentication failures") {
		t.Fatalf("7 wrong keys: %v; want disconnect reason 2, too many authentication failures", err)
	}
	// The right key after max_auth_tries wrong ones is refused too.
	keys := []ssh.Signer{}
	for i := 0; i < 6; i++ {
		keys = append(keys, hostile.NewKey())
	}
	if c, err := (hostile.Dialer{Addr: f.addr}).Login(f.user, append(keys, f.signer)...); err == nil {
		c.Close()
		t.Fatal("logged in with the 7th key, past max_auth_tries 6")
	}
}

// Issue 11, item 9: become does not echo a long tool name back in full.
func TestBecomeLongName(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t, f.user)
	defer c.Close()
	_, stderr, err := hostile.Exec(c, "become "+strings.Repeat("x", 5000)+"! id")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 1 {
		t.Fatalf("become with a long name: %v", err)
	}
	if len(stderr) > 600 || !strings.Contains(stderr, "(cut, 5001 bytes)") || !strings.Contains(stderr, "is not a valid tool name") {
		t.Fatalf("become's message is %d bytes: %.200q", len(stderr), stderr)
	}
	// An unknown subsystem's name is cut in the log too.
	s, _ := c.NewSession()
	defer s.Close()
	if err := s.RequestSubsystem(strings.Repeat("s", 100000)); err == nil {
		t.Error("unknown subsystem accepted")
	}
	if strings.Contains(f.logs.String(), strings.Repeat("s", 1000)) {
		t.Error("a 100 KB subsystem name reached the log uncut")
	}
}

// Issue 11, item 4: five connections offering keys for 260 KB user
// names cost a bounded amount of log and audit log.
func TestLongUserNamesAreCut(t *testing.T) {
	f := newFixture(t, nil)
	name := strings.Repeat("a", 200000) // a packet holds 256 KB
	for i := 0; i < 5; i++ {
		if err := (hostile.Dialer{Addr: f.addr}).FailAuth(name, 6); err == nil || !strings.Contains(err.Error(), "unable to authenticate") && !strings.Contains(err.Error(), "too many") {
			t.Fatalf("login with a long name: %v", err)
		}
	}
	if n := len(f.logs.String()) + len(f.audit.String()); n > 100_000 {
		t.Fatalf("logs and audit grew by %d bytes for 30 attempts", n)
	}
	if !strings.Contains(f.audit.String(), "…(cut, 200000 bytes)") {
		t.Fatalf("no cut marker in the audit log:\n%.2000s", f.audit.String())
	}
}

// Issue 11, item 4: past the first few a minute, one source's failed
// attempts are counted and summarised instead of logged one by one.
func TestAuthFailuresSummarised(t *testing.T) {
	f := newFixture(t, nil)
	for i := 0; i < 30; i++ {
		_ = hostile.Dialer{Addr: f.addr}.FailAuth(f.user, 1)
	}
	if n := strings.Count(f.logs.String(), `msg="authentication failed"`); n != logBurst {
		t.Errorf("%d failures logged one by one; want %d", n, logBurst)
	}
	if n := strings.Count(f.audit.String(), `"event":"auth.failure"`); n != logBurst {
		t.Errorf("%d failures audited one by one; want %d", n, logBurst)
	}
	f.stop() // reports what is pending
	if !strings.Contains(f.logs.String(), `msg="authentication failures not logged one by one" remote=127.0.0.1 count=20`) {
		t.Errorf("no summary line:\n%s", f.logs.String())
	}
	if !strings.Contains(f.audit.String(), `"event":"auth.failure.summary","remote":"127.0.0.1","reason":"20 more failed attempts in 1m0s","count":20`) {
		t.Errorf("no summary event:\n%s", f.audit.String())
	}
}

// Issue 11, item 5: unauthenticated connections are capped per source,
// below the cap on a source's connections.
func TestPerSourceMaxStartups(t *testing.T) {
	f := newFixture(t, func(s *Settings) { s.Limits.PerSourceMaxStartups = 2 })
	d := hostile.Dialer{Addr: f.addr}
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := d.HalfHandshake()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitCond(t, "two unauthenticated connections", 5*time.Second, func() bool { return f.srv.ActiveConns() == 2 })
	c, err := d.Silent()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectRefused(t, c, "third unauthenticated connection from one source")
	if !strings.Contains(f.logs.String(), "reason=per_source_max_startups") {
		t.Error("no log line for the refusal")
	}
	// Logged-in connections do not count: with the two slots free, more
	// than two logins from the same source hold at once.
	for _, h := range held {
		h.Close()
	}
	waitCond(t, "the slots to free", 5*time.Second, func() bool { return f.srv.ActiveConns() == 0 })
	for i := 0; i < 4; i++ {
		defer f.dial(t, f.user).Close()
	}
}

// Issue 11, item 5: a source that keeps failing is refused for a while;
// an exempt one never is.
func TestPenalties(t *testing.T) {
	for _, tt := range []struct {
		name    string
		exempt  []string
		refused bool
	}{
		{"penalised", nil, true},
		{"exempt", []string{"127.0.0.0/8"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(s *Settings) {
				s.Limits.Penalties.Enabled = true
				s.Limits.Penalties.Exempt = tt.exempt
			})
			d := hostile.Dialer{Addr: f.addr}
			// 5 s each; the fourth takes the penalty past min (15 s).
			for i := 0; i < 4; i++ {
				if err := d.FailAuth(f.user, 1); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
					t.Fatalf("attempt %d: %v", i, err)
				}
			}
			waitCond(t, "the last attempt to end", 5*time.Second, func() bool { return f.srv.ActiveConns() == 0 })
			c, err := d.Silent()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if !tt.refused {
				ok := f.dial(t, f.user)
				ok.Close()
				return
			}
			expectRefused(t, c, "a penalised source")
			if !strings.Contains(f.logs.String(), "source penalised") {
				t.Errorf("no log line:\n%s", f.logs.String())
			}
		})
	}
}

func TestEarlyDrop(t *testing.T) {
	st := config.Startups{Begin: 10, Rate: 30, Full: 100}
	for _, tt := range []struct {
		unauth, roll int
		want         bool
	}{
		{9, 0, false},
		{10, 29, true},
		{10, 30, false},
		{55, 64, true}, // p = 30 + 70*45/90 = 65
		{55, 65, false},
		{100, 99, true},
	} {
		if got := earlyDrop(tt.unauth, st, func(int) int { return tt.roll }); got != tt.want {
			t.Errorf("earlyDrop(%d) with roll %d = %v, want %v", tt.unauth, tt.roll, got, tt.want)
		}
	}
}

func TestPenaltyBox(t *testing.T) {
	cfg := config.Default().Limits.Penalties
	src := netip.MustParseAddr("192.0.2.1")
	now := time.Unix(1000, 0)
	var pb penaltyBox
	if _, ok := pb.refused(cfg, nil, src, now); ok {
		t.Fatal("refused before any penalty")
	}
	for i := 0; i < 3; i++ {
		pb.add(cfg, nil, src, penaltyAuthFailure, cfg.AuthFailure, now)
	}
	if _, ok := pb.refused(cfg, nil, src, now); ok {
		t.Fatal("refused at 15 s of penalty (min is 15 s: more is needed)")
	}
	activated, left, _ := pb.add(cfg, nil, src, penaltyAuthFailure, cfg.AuthFailure, now)
	if !activated || left != 20*time.Second {
		t.Fatalf("fourth failure: activated %v, left %s", activated, left)
	}
	if why, ok := pb.refused(cfg, nil, src, now.Add(19*time.Second)); !ok || why != penaltyAuthFailure {
		t.Fatal("not refused during the penalty")
	}
	if _, ok := pb.refused(cfg, nil, src, now.Add(21*time.Second)); ok {
		t.Fatal("refused after the penalty ran out")
	}
	for i := 0; i < 1000; i++ {
		pb.add(cfg, nil, src, penaltyGraceExceeded, cfg.GraceExceeded, now)
	}
	if _, left, _ := pb.add(cfg, nil, src, penaltyNoAuth, cfg.NoAuth, now); left != cfg.Max {
		t.Fatalf("penalty grew to %s; max is %s", left, cfg.Max)
	}
	cfg.MaxSources = 1
	if _, _, ok := pb.add(cfg, nil, netip.MustParseAddr("192.0.2.2"), penaltyNoAuth, time.Second, now); ok {
		t.Fatal("a second source penalised past max_sources 1")
	}
}

// Issue 11, item 7: a client that does not read cannot hold up the
// drain: the notice is best effort and shutdown_grace is honoured.
func TestDrainWithClientThatDoesNotRead(t *testing.T) {
	f := newFixture(t, nil)
	c := f.dial(t, f.user)
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads stdout: the channel window fills and stays full.
	if _, err := s.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("yes"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan struct{})
	go func() { _ = f.srv.Shutdown(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown with a 1 s grace still running after 10 s")
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("Shutdown returned after %s, before the grace period", d)
	}
}

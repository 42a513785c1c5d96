package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/integration/slapd"
)

// The quick soak: 100 sessions for 30 s on a real bastion with real
// clients. It fails on any byte lost or changed, any failed session,
// copy or login, and any goroutine or session process left behind.
func TestSoakQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("the quick soak runs bastion under load for about a minute; skipped under -short")
	}
	opt, err := parseSoakFlags([]string{"-quick"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	opt.keep = os.Getenv("BASTION_SOAK_KEEP") != "" // bastion's log, to see why
	var out bytes.Buffer
	rep, err := soak(t.Context(), opt, &out)
	if err != nil {
		t.Fatalf("soak: %v\n%s", err, out.String())
	}
	t.Logf("\n%s", rep.markdown())
	if p := rep.problems(); len(p) > 0 {
		t.Errorf("the quick soak found problems:\n%s\nprogress:\n%s", strings.Join(p, "\n"), out.String())
	}
	if len(rep.rows) < 3 {
		t.Errorf("%d report rows; want one per 10s of 30s", len(rep.rows))
	}
	var moved int64
	for _, k := range rep.kinds {
		if k.sessions == 0 {
			t.Errorf("no %s traffic ran", k.kind)
		}
		moved += k.ok
	}
	if moved == 0 || rep.loginOK == 0 {
		t.Errorf("nothing was moved (%d bytes) or no login made (%d)", moved, rep.loginOK)
	}
}

// problems tells every way a run can fail.
func TestSoakProblems(t *testing.T) {
	t.Parallel()
	good := func() *soakReport {
		return &soakReport{baseGoroutines: 10, endGoroutines: 12, kinds: []kindTotals{
			{kind: kindPTY, sessions: 4, sent: 100, ok: 100}, {kind: kindExec, sessions: 3, sent: 50, ok: 50},
			{kind: kindForward, sessions: 3, sent: 70, ok: 70},
		}}
	}
	tests := []struct {
		name string
		edit func(*soakReport)
		want string // "" for none
	}{
		{"clean", func(*soakReport) {}, ""},
		{"lost bytes", func(r *soakReport) { r.kinds[1].ok = 40 }, "10 bytes lost"},
		{"changed bytes", func(r *soakReport) { r.kinds[2].ok, r.kinds[2].corrupt = 60, 10 }, "10 bytes came back different"},
		{"failed session", func(r *soakReport) { r.kinds[0].failed = 1 }, "1 sessions or copies failed"},
		{"failed login", func(r *soakReport) { r.loginBad = 2 }, "2 logins failed"},
		{"goroutines left", func(r *soakReport) { r.endGoroutines = 10 + goroutineSlack + 1 }, "goroutines after every client left"},
		{"processes left", func(r *soakReport) { r.leftProcs = 3 }, "3 session processes left"},
		{"nothing opened", func(r *soakReport) {
			for i := range r.kinds {
				r.kinds[i] = kindTotals{kind: r.kinds[i].kind}
			}
		}, "no session could be opened"},
	}
	for _, tt := range tests {
		r := good()
		tt.edit(r)
		p := strings.Join(r.problems(), "\n")
		if tt.want == "" && p != "" || tt.want != "" && !strings.Contains(p, tt.want) {
			t.Errorf("%s: problems %q; want %q", tt.name, p, tt.want)
		}
	}
}

func TestSoakFlags(t *testing.T) {
	t.Parallel()
	o, err := parseSoakFlags([]string{"-quick", "-sessions", "50"}, &bytes.Buffer{})
	if err != nil || o.sessions != 50 || o.duration != 30*time.Second || o.loginRate != 10 {
		t.Errorf("-quick -sessions 50: %+v, %v", o, err)
	}
	o, err = parseSoakFlags(nil, &bytes.Buffer{})
	if err != nil || o.sessions != 1000 || o.duration != 10*time.Minute || o.loginRate != 50 || o.interval != time.Minute {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"-sessions", "0"}, {"-duration", "1s"}, {"-rate", "0"}, {"-port", "70000"}, {"extra"}} {
		if _, err := parseSoakFlags(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Issue 15, while the soak runs: the LDAP server hangs (SIGSTOP) for a
// third of the run, then continues. The person keeps logging in (from
// the stale cache, within about ldap.stale_wait) at the login rate, the
// sessions keep moving their bytes, and nothing is lost or left behind.
func TestSoakLDAPHung(t *testing.T) {
	if testing.Short() {
		t.Skip("runs bastion and slapd under load for about 40 s; skipped under -short")
	}
	slapd.Require(t)
	// alice's home, reachable by her uid when bastion runs as root.
	homes := t.TempDir()
	for _, d := range []string{filepath.Dir(homes), homes} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home := filepath.Join(homes, "alice")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(home, 5001, 500); err != nil {
			t.Fatal(err)
		}
	}
	seed := strings.ReplaceAll(slapd.DefaultSeed(t), "homeDirectory: /home/", "homeDirectory: "+homes+"/")
	s := slapd.Start(t, slapd.Options{LDIF: seed})
	t.Cleanup(s.Resume)

	opt, err := parseSoakFlags([]string{"-quick", "-sessions", "40", "-duration", "36s", "-interval", "6s", "-openssh", "0"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	opt.user, opt.signer = "alice", slapd.Signer("alice-1")
	opt.directory = ldapDirectory(s)
	opt.faults = []soakFault{
		{at: 12 * time.Second, name: "slapd stopped (SIGSTOP)", do: s.Pause},
		{at: 24 * time.Second, name: "slapd continued (SIGCONT)", do: s.Resume},
	}
	var out bytes.Buffer
	rep, err := soak(t.Context(), opt, &out)
	if err != nil {
		t.Fatalf("soak: %v\n%s", err, out.String())
	}
	t.Logf("\n%s", rep.markdown())
	if p := rep.problems(); len(p) > 0 {
		t.Errorf("LDAP hung under load: problems:\n%s\nprogress:\n%s", strings.Join(p, "\n"), out.String())
	}
	if len(rep.faults) != 2 {
		t.Errorf("faults injected: %q", rep.faults)
	}
	for _, row := range rep.rows {
		// Well within the 10 s a login waits, on a busy machine.
		if row.max > 5*time.Second {
			t.Errorf("at %s a login took %s", row.at.Round(time.Second), row.max)
		}
	}
}

// ldapDirectory is the soak's directory config for the slapd servers
// given (ldap.urls in that order; all hold the same directory and the
// first one's bind password): a 2 s cache, so that a fault reaches the
// logins quickly.
func ldapDirectory(servers ...*slapd.Server) string {
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = strconv.Quote(s.URL)
	}
	return fmt.Sprintf(`directory:
  type: ldap
ldap:
  urls: [%s]
  start_tls: false
  bind_dn: %s
  bind_password_file: %s
  base_dn: %s
  kill_switch_file: ""
  cache_ttl: 2s
`, strings.Join(urls, ", "), slapd.BindDN, servers[0].PasswordFile, slapd.Base)
}

func TestParseSamples(t *testing.T) {
	page := `# HELP bastion_sessions_active Sessions open.
# TYPE bastion_sessions_active gauge
bastion_sessions_active 3
bastion_kube_request_duration_seconds_count{cluster="tools",method="PATCH",resource="pods"} 4
bastion_kube_request_duration_seconds_count{cluster="tools",method="GET",resource="pods"} 6
bastion_kube_request_duration_seconds_sum{cluster="tools",method="PATCH",resource="pods"} 0.25
bastion_ldap_server_up{server="ldap://a:389"} 1
broken{x="1" 2
notanumber abc
`
	samples := parseSamples(page)
	m := sums(samples)
	for name, want := range map[string]float64{
		"bastion_sessions_active":                     3,
		"bastion_kube_request_duration_seconds_count": 10,
		"bastion_kube_request_duration_seconds_sum":   0.25,
		"bastion_ldap_server_up":                      1,
	} {
		if m[name] != want {
			t.Errorf("sums[%s] = %v, want %v", name, m[name], want)
		}
	}
	if len(m) != 4 {
		t.Errorf("sums has %d names, want 4: %v", len(m), m)
	}
	if p := patchSeconds(samples); p != (patchTimes{n: 4, sum: 0.25}) {
		t.Errorf("patchSeconds = %+v, want 4 PATCHes taking 0.25 s", p)
	}
	if got := samples[len(samples)-1].label("server"); got != "ldap://a:389" {
		t.Errorf(`label("server") = %q, want ldap://a:389`, got)
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bastion-ssh/bastion/integration/slapd"
)

// The kube soak with an LDAP directory on two real slapd servers holding
// the same tree (ldap.urls: [slapd #1, slapd #2]), and LDAP faults
// injected while it runs (issue 15): slapd #1 hung by SIGSTOP, both hung,
// slapd #1 killed and started again, both killed and started again.
//
// During each fault, besides the soak's own load (its sessions, which must
// all go on with every byte, and its logins, which must all succeed: the
// soak's accounts are cached), a prober logs in (authentication only, so
// that no pod is made) as a cached account and as people never seen
// before, and checks what they read and how long they waited. After each
// fault: no shell pod added or lost, no probe pod, bastion's goroutines
// back to where they were before the faults (checked here, between the
// faults, not only at the end), and bastion's LDAP metrics and log saying
// what happened.
func TestChaosKubeLDAP(t *testing.T) {
	if testing.Short() || !*kubeChaos {
		t.Skip("stops and kills slapd servers under a kube soak on the shared test cluster for about 5 minutes: run it alone with go test -run TestChaosKubeLDAP ./bench -args -kube.chaos")
	}
	slapd.Require(t)
	k := startKubeSoak(t, 10, "-sessions", "20", "-duration", "210s", "-interval", "15s", "-login-rate", "2", "-ramp", "5")
	k.opt.command = "go test -run TestChaosKubeLDAP -timeout 15m ./bench -args -kube.chaos"

	// The same tree on both servers: the soak's accounts (cached: the
	// soak logs each in every few seconds) and people nobody has seen.
	seed := slapd.DefaultSeed(t) + ldapSoakSeed(k.opt.accounts, ldapFresh, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.opt.signer.PublicKey()))))
	s1 := slapd.Start(t, slapd.Options{LDIF: seed})
	s2 := slapd.Start(t, slapd.Options{LDIF: seed})
	t.Cleanup(s1.Resume)
	t.Cleanup(s2.Resume)
	k.opt.directory = ldapDirectory(s1, s2)

	c := &ldapChaos{t: t, k: k, s1: s1, s2: s2}
	k.opt.faults = []soakFault{{at: 15 * time.Second, name: "LDAP faults (slapd #1 hung, both hung, #1 killed, both killed)", act: c.run}}
	rep := k.run(t)
	t.Logf("LDAP chaos, one row per fault:\n%s", c.table())
	if len(rep.faults) != 1 {
		t.Errorf("faults injected: %q", rep.faults)
	}
}

// ldapFresh is how many people never seen the seed holds: each login
// that must be a new person's takes the next one.
const ldapFresh = 60

// ldapSoakSeed is the LDIF of the soak's accounts (members of tools.soak,
// the tool whose Service the ssh -L streams reach) and of ldapFresh people
// named new000... who never log in before a fault, all with key.
func ldapSoakSeed(accounts []string, fresh int, key string) string {
	var b strings.Builder
	person := func(name string, uid int) {
		fmt.Fprintf(&b, `
dn: uid=%[1]s,ou=people,{{.Base}}
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: ldapPublicKey
uid: %[1]s
cn: %[1]s
sn: %[1]s
uidNumber: %[2]d
gidNumber: %[2]d
homeDirectory: /home/%[1]s
loginShell: /bin/sh
sshPublicKey: %[3]s
`, name, uid, key)
	}
	for i, a := range accounts {
		person(a, 61000+i)
	}
	for i := range fresh {
		person(fmt.Sprintf("new%03d", i), 62000+i)
	}
	b.WriteString("\ndn: cn=tools.soak,ou=servicegroups,{{.Base}}\nobjectClass: posixGroup\ncn: tools.soak\ngidNumber: 53000\n")
	for _, a := range accounts {
		fmt.Fprintf(&b, "memberUid: %s\n", a)
	}
	b.WriteString(`
dn: uid=tools.soak,ou=people,ou=servicegroups,{{.Base}}
objectClass: account
objectClass: posixAccount
uid: tools.soak
cn: tools.soak
uidNumber: 53000
gidNumber: 53000
homeDirectory: /data/project/soak
loginShell: /bin/sh
`)
	return b.String()
}

// ldapChaos runs the faults one after the other and keeps what each one
// showed.
type ldapChaos struct {
	t      *testing.T
	k      *kubeSoak
	s1, s2 *slapd.Server

	mu       sync.Mutex
	fresh    int // the next never-seen person
	cachedN  int // the next cached account the prober uses
	baseline int // bastion's goroutines with every session open, before the faults
	rows     []ldapChaosRow
}

// ldapChaosRow is one fault's outcome.
type ldapChaosRow struct {
	fault        string
	cached, new  []probeLogin
	recovered    time.Duration // until a new person logs in again (faults that refuse new people)
	during       map[string]float64
	after        string
	logTruth     string
	problems     []string
	expectNewErr bool
}

// probeLogin is one of the prober's logins.
type probeLogin struct {
	who  string
	took time.Duration
	err  error
	read string // the banner: what ssh prints to the person
}

// logf logs with the test (safe from the fault's goroutine).
func (c *ldapChaos) logf(format string, args ...any) { c.t.Logf(format, args...) }

// login authenticates as who (no session: no pod) and says what the
// person read and how long it took.
func (c *ldapChaos) login(w *soakWorld, who string) probeLogin {
	var banner strings.Builder
	cfg := w.clientConfig(who)
	cfg.Timeout = 20 * time.Second
	cfg.BannerCallback = func(msg string) error { banner.WriteString(msg); return nil }
	start := time.Now()
	cl, err := ssh.Dial("tcp", w.srv.addr(), cfg)
	took := time.Since(start)
	if err == nil {
		cl.Close()
	}
	return probeLogin{who: who, took: took, err: err, read: strings.TrimSpace(banner.String())}
}

func (c *ldapChaos) nextFresh() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fresh++
	return fmt.Sprintf("new%03d", (c.fresh-1)%ldapFresh)
}

func (c *ldapChaos) nextCached() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cachedN++
	return c.k.opt.accounts[c.cachedN%len(c.k.opt.accounts)]
}

// Bounds of what a person may wait, with the defaults (ldap.dial_timeout
// 2s, ldap.timeout 3s, ldap.stale_wait 1s) and sshd's 10 s for a lookup,
// on a busy 2-core machine (an SSH handshake alone takes up to a few
// hundred ms there).
const (
	cachedLoginMax  = 3 * time.Second // stale_wait and the handshake
	newLoginMax     = 7 * time.Second // a timed-out pooled connection, then the other server
	refusedLoginMax = 9 * time.Second // ldap.timeout + 2 × ldap.dial_timeout when both have just hung, and the handshake; sshd's 10 s
)

// probe logs in during d: a cached account each second, a new person
// every newEvery; each must see what the fault allows.
func (c *ldapChaos) probe(ctx context.Context, w *soakWorld, row *ldapChaosRow, d, newEvery time.Duration, newRefused bool) {
	end := time.Now().Add(d)
	lastNew := time.Time{}
	for time.Now().Before(end) && ctx.Err() == nil {
		tick := time.Now()
		p := c.login(w, c.nextCached())
		row.cached = append(row.cached, p)
		if p.err != nil || p.took > cachedLoginMax {
			row.problems = append(row.problems, fmt.Sprintf("cached %s: %v (read %q) after %s; want in within %s", p.who, p.err, p.read, p.took.Round(time.Millisecond), cachedLoginMax))
		}
		if time.Since(lastNew) >= newEvery {
			lastNew = time.Now()
			p := c.login(w, c.nextFresh())
			row.new = append(row.new, p)
			switch {
			case newRefused && (p.err == nil || !strings.Contains(p.read, "directory unavailable, try again")):
				row.problems = append(row.problems, fmt.Sprintf("new %s: %v, read %q; want refused with \"directory unavailable, try again\"", p.who, p.err, p.read))
			case newRefused && p.took > refusedLoginMax:
				row.problems = append(row.problems, fmt.Sprintf("new %s: refused after %s; want within %s", p.who, p.took.Round(time.Millisecond), refusedLoginMax))
			case !newRefused && (p.err != nil || p.took > newLoginMax):
				row.problems = append(row.problems, fmt.Sprintf("new %s: %v (read %q) after %s; want in within %s", p.who, p.err, p.read, p.took.Round(time.Millisecond), newLoginMax))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(tick.Add(time.Second))):
		}
	}
}

// recover waits until a new person logs in again (without a bastion
// restart) and returns how long that took from now.
func (c *ldapChaos) recoverNew(ctx context.Context, w *soakWorld, row *ldapChaosRow) {
	start := time.Now()
	for time.Since(start) < 30*time.Second && ctx.Err() == nil {
		p := c.login(w, c.nextFresh())
		if p.err == nil {
			row.recovered = time.Since(start)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	row.problems = append(row.problems, "new people still cannot log in 30s after the LDAP servers came back")
}

// run is the fault act: every fault in turn, each with its checks.
func (c *ldapChaos) run(ctx context.Context, w *soakWorld) error {
	// Every session open and every pod running before the first fault.
	if err := c.waitSessions(ctx, w, 90*time.Second); err != nil {
		return err
	}
	if _, err := c.checkpoint(ctx, w, nil); err != nil {
		return fmt.Errorf("before the faults: %w", err)
	}
	c.logf("before the faults: %d goroutines", c.baseline)

	type fault struct {
		name       string
		inject     func()
		newRefused bool
		gauges     map[string][2]float64 // server → want (up, hung) during the fault
		heal       func()
		truth      func(log []logLine, from, healed time.Time) string // "" when the log tells the truth
	}
	u1, u2 := c.s1.URL, c.s2.URL
	faults := []fault{
		{name: "none: both servers up (the machine's own login times, for comparison)", inject: func() {}, heal: func() {},
			gauges: map[string][2]float64{u1: {1, 0}, u2: {1, 0}},
			truth:  func([]logLine, time.Time, time.Time) string { return "" }},
		{name: "slapd #1 hung (SIGSTOP) for 15 s", inject: c.s1.Pause, heal: c.s1.Resume,
			gauges: map[string][2]float64{u1: {0, 1}, u2: {1, 0}},
			truth: func(l []logLine, from, healed time.Time) string {
				return logTruth(l, from, healed, u1, "does not answer (hung?)")
			}},
		{name: "both hung (SIGSTOP) for 15 s", inject: func() { c.s1.Pause(); c.s2.Pause() }, heal: func() { c.s1.Resume(); c.s2.Resume() },
			newRefused: true, gauges: map[string][2]float64{u1: {0, 1}, u2: {0, 1}},
			truth: func(l []logLine, from, healed time.Time) string {
				return logTruth(l, from, healed, u1, "does not answer (hung?)") + logTruth(l, from, healed, u2, "does not answer (hung?)")
			}},
		{name: "slapd #1 killed (SIGKILL), started again after 10 s", inject: c.s1.Kill, heal: func() { c.s1.Restart(nil) },
			gauges: map[string][2]float64{u1: {0, 0}, u2: {1, 0}},
			truth: func(l []logLine, from, healed time.Time) string {
				return logTruth(l, from, healed, u1, "ldap server failed")
			}},
		{name: "both killed (SIGKILL), started again after 10 s", inject: func() { c.s1.Kill(); c.s2.Kill() }, heal: func() { c.s1.Restart(nil); c.s2.Restart(nil) },
			newRefused: true, gauges: map[string][2]float64{u1: {0, 0}, u2: {0, 0}},
			truth: func(l []logLine, from, healed time.Time) string {
				return logTruth(l, from, healed, u1, "ldap server failed") + logTruth(l, from, healed, u2, "ldap server failed")
			}},
	}
	var errs []string
	for _, f := range faults {
		row := ldapChaosRow{fault: f.name, expectNewErr: f.newRefused}
		c.logf("LDAP fault: %s", f.name)
		from := time.Now()
		before, _ := w.metrics(ctx)
		beforeLDAP, _ := ldapMetrics(ctx, w)
		f.inject()
		hold := 15 * time.Second
		if strings.Contains(f.name, "killed") || strings.HasPrefix(f.name, "none") {
			hold = 10 * time.Second
		}
		c.probe(ctx, w, &row, hold, 4*time.Second, f.newRefused)
		// What the metrics say while the fault lasts.
		during, err := ldapMetrics(ctx, w)
		if err != nil {
			row.problems = append(row.problems, "read the metrics: "+err.Error())
		}
		for url, want := range f.gauges {
			if up, hung := during["up "+url], during["hung "+url]; up != want[0] || hung != want[1] {
				row.problems = append(row.problems, fmt.Sprintf("during the fault: bastion_ldap_server_up %v, bastion_ldap_server_hung %v for %s; want %v, %v", up, hung, url, want[0], want[1]))
			}
		}
		now, _ := w.metrics(ctx)
		row.during = map[string]float64{
			"ldap_errors":      now["bastion_ldap_errors_total"] - before["bastion_ldap_errors_total"],
			"cache stale":      during["stale"] - beforeLDAP["stale"],
			"auth unavailable": during["unavailable"] - beforeLDAP["unavailable"],
		}
		healed := time.Now()
		f.heal()
		c.logf("LDAP fault healed: %s", f.name)
		if f.newRefused {
			c.recoverNew(ctx, w, &row)
		}
		// Both servers said to answer again (log and gauges), within
		// the pool's probe interval and a little.
		deadline := time.Now().Add(20 * time.Second)
		for {
			m, err := ldapMetrics(ctx, w)
			if err == nil && m["up "+u1] == 1 && m["up "+u2] == 1 && m["hung "+u1] == 0 && m["hung "+u2] == 0 {
				break
			}
			if time.Now().After(deadline) {
				row.problems = append(row.problems, fmt.Sprintf("20s after the fault ended, the gauges say %v", m))
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		logs, err := readBastionLog(w.srv.logPath)
		if err != nil {
			row.problems = append(row.problems, err.Error())
		}
		if lie := f.truth(logs, from, healed); lie != "" {
			row.problems = append(row.problems, lie)
		}
		row.logTruth = summarizeLog(logs, from)
		after, err := c.checkpoint(ctx, w, &row)
		if err != nil {
			row.problems = append(row.problems, err.Error())
		}
		row.after = after
		c.mu.Lock()
		c.rows = append(c.rows, row)
		c.mu.Unlock()
		for _, p := range row.problems {
			errs = append(errs, f.name+": "+p)
		}
		c.logf("LDAP fault done: %s: %s; problems: %q", f.name, after, row.problems)
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// waitSessions waits until bastion has every soak session open and every
// account's pod runs (a session counts as open while it waits for its
// pod), then a little more for the sessions' commands to start.
func (c *ldapChaos) waitSessions(ctx context.Context, w *soakWorld, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		m, err := w.metrics(ctx)
		phases, n, perr := c.k.pods(ctx)
		if err == nil && perr == nil && m["bastion_sessions_active"] >= float64(c.k.opt.sessions) &&
			n == len(c.k.opt.accounts) && phases[corev1.PodRunning] == n {
			time.Sleep(5 * time.Second)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%v sessions open and %d pods (%v) after %s, want %d and %d running (%v, %v)",
				m["bastion_sessions_active"], n, phases, d, c.k.opt.sessions, len(c.k.opt.accounts), err, perr)
		}
		time.Sleep(time.Second)
	}
}

// ldapChaosSlack: goroutines over the baseline that still count as back
// to it, at the lowest of a few seconds' samples (the soak's own logins,
// two a second, each running a command in a pod, come and go meanwhile).
const ldapChaosSlack = 40

// settledGoroutines is bastion's goroutine count with the soak's coming
// and going logins left out: the lowest of 5 s of samples, taken again
// until it is at most atMost or within has passed (-1 for atMost: once).
func settledGoroutines(ctx context.Context, w *soakWorld, atMost int, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		low := -1
		for range 20 {
			if g, err := w.goroutines(ctx); err == nil && (low < 0 || g < low) {
				low = g
			}
			time.Sleep(250 * time.Millisecond)
		}
		if atMost < 0 || low <= atMost || time.Now().After(deadline) {
			return low
		}
	}
}

// checkpoint checks the world between faults: every session still open,
// one running shell pod per account and no probe pod, and bastion's
// goroutines back to the baseline (the first call sets it). It returns
// what it saw, for the report.
func (c *ldapChaos) checkpoint(ctx context.Context, w *soakWorld, row *ldapChaosRow) (string, error) {
	var problems []string
	atMost := c.baseline + ldapChaosSlack
	if row == nil {
		atMost = -1 // the baseline
	}
	low := settledGoroutines(ctx, w, atMost, 30*time.Second)
	if row == nil {
		c.baseline = low
	} else if low > c.baseline+ldapChaosSlack {
		problems = append(problems, fmt.Sprintf("bastion has %d goroutines after the fault, %d before the faults", low, c.baseline))
	}
	m, err := w.metrics(ctx)
	if err != nil {
		problems = append(problems, "read the metrics: "+err.Error())
	} else if open := m["bastion_sessions_active"]; open < float64(c.k.opt.sessions) {
		problems = append(problems, fmt.Sprintf("%v sessions open, want %d: the fault dropped some", open, c.k.opt.sessions))
	}
	phases, n, err := c.k.pods(ctx)
	if err != nil || n != len(c.k.opt.accounts) || phases[corev1.PodRunning] != n {
		problems = append(problems, fmt.Sprintf("%d shell pods (%v), want %d running (one per account): %v", n, phases, len(c.k.opt.accounts), err))
	}
	probes, err := c.k.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=preflight,bastion.io/project=" + c.k.project})
	if err != nil || len(probes.Items) != 0 {
		problems = append(problems, fmt.Sprintf("pre-flight probe pods left: %v", err))
	}
	seen := fmt.Sprintf("%d goroutines (%d before the faults), %d shell pods, %v sessions open", low, c.baseline, n, m["bastion_sessions_active"])
	if len(problems) > 0 {
		return seen, errors.New(strings.Join(problems, "; "))
	}
	return seen, nil
}

// ldapMetrics reads bastion's LDAP gauges by server ("up URL", "hung
// URL"), the stale answers ("stale") and the logins refused as
// unavailable ("unavailable").
func ldapMetrics(ctx context.Context, w *soakWorld) (map[string]float64, error) {
	samples, err := w.samples(ctx)
	m := map[string]float64{}
	for _, s := range samples {
		server := s.label("server")
		switch {
		case s.labels == "":
		case s.name == "bastion_ldap_server_up":
			m["up "+server] = s.value
		case s.name == "bastion_ldap_server_hung":
			m["hung "+server] = s.value
		case s.name == "bastion_directory_cache_total" && s.label("result") == "stale":
			m["stale"] = s.value
		case s.name == "bastion_auth_attempts_total" && s.label("result") == "unavailable":
			m["unavailable"] += s.value
		}
	}
	return m, err
}

// logLine is one line of bastion's JSON log.
type logLine struct {
	Time   time.Time `json:"time"`
	Level  string    `json:"level"`
	Msg    string    `json:"msg"`
	Server string    `json:"server"`
}

func readBastionLog(path string) ([]logLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read bastion's log: %w", err)
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && strings.Contains(l.Msg, "ldap") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// logTruth says what is wrong with the log of a fault of server from
// from to healed: it must say the server failed (with want in the
// message) during the fault, never that it answers again before healed,
// and that it answers again after. "" when all is true.
func logTruth(lines []logLine, from, healed time.Time, server, want string) string {
	var failed, early, again bool
	for _, l := range lines {
		if l.Server != server || l.Time.Before(from) {
			continue
		}
		switch {
		case strings.Contains(l.Msg, want) && l.Time.Before(healed):
			failed = true
		case strings.Contains(l.Msg, "answers again") && l.Time.Before(healed):
			early = true
		case strings.Contains(l.Msg, "answers again"):
			again = true
		}
	}
	var lies []string
	if !failed {
		lies = append(lies, fmt.Sprintf("the log never said %q for %s during the fault", want, server))
	}
	if early {
		lies = append(lies, fmt.Sprintf("the log said %s answers again before it did", server))
	}
	if !again {
		lies = append(lies, fmt.Sprintf("the log never said %s answers again", server))
	}
	return strings.Join(lies, "; ")
}

// summarizeLog counts the LDAP log lines since from, by message.
func summarizeLog(lines []logLine, from time.Time) string {
	n := map[string]int{}
	for _, l := range lines {
		if !l.Time.Before(from) {
			n[l.Level+" "+l.Msg]++
		}
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(n)) {
		parts = append(parts, fmt.Sprintf("%d × %s", n[k], k))
	}
	return strings.Join(parts, "; ")
}

// table is the report: one row per fault.
func (c *ldapChaos) table() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	b.WriteString("| fault | cached logins | new people | recovered | metrics during | log | after | problems |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range c.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.fault, summarize(r.cached), summarize(r.new),
			r.recovered.Round(10*time.Millisecond), fmtMetrics(r.during), r.logTruth, r.after, strings.Join(r.problems, "; "))
	}
	return b.String()
}

// summarize is "n in, m refused (what they read); max T" for probe logins.
func summarize(ps []probeLogin) string {
	var ok, bad int
	var worst time.Duration
	read := map[string]bool{}
	var took []time.Duration
	for _, p := range ps {
		if p.err == nil {
			ok++
		} else {
			bad++
			read[p.read] = true
		}
		took = append(took, p.took)
		worst = max(worst, p.took)
	}
	slices.Sort(took)
	var msgs []string
	for m := range read {
		msgs = append(msgs, fmt.Sprintf("%q", m))
	}
	slices.Sort(msgs)
	med := time.Duration(0)
	if len(took) > 0 {
		med = took[len(took)/2]
	}
	s := fmt.Sprintf("%d in, %d refused; median %s, max %s", ok, bad, med.Round(time.Millisecond), worst.Round(time.Millisecond))
	if len(msgs) > 0 {
		s += " (read " + strings.Join(msgs, ", ") + ")"
	}
	return s
}

func fmtMetrics(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s +%.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

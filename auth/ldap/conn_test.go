package ldap

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/integration/slapd"
)

func TestTLS(t *testing.T) {
	t.Parallel()
	ca := slapd.NewCA(t, "bastion test CA")
	s := slapd.Start(t, slapd.Options{TLS: ca})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	ca.WriteCert(t, caFile)
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	slapd.NewCA(t, "another CA").WriteCert(t, otherCA)

	tests := []struct {
		name     string
		url      string
		startTLS bool
		caFile   string
		want     error  // nil: alice is found
		log      string // in the log when want is set
	}{
		{"StartTLS with CA file", s.URL, true, caFile, nil, ""},
		{"ldaps with CA file", s.LDAPSURL, false, caFile, nil, ""},
		{"ldaps with CA file and start_tls set", s.LDAPSURL, true, caFile, nil, ""},
		{"StartTLS with another CA", s.URL, true, otherCA, auth.ErrUnavailable, "certificate signed by unknown authority"},
		{"ldaps with another CA", s.LDAPSURL, false, otherCA, auth.ErrUnavailable, "certificate signed by unknown authority"},
		{"ldaps with system roots", s.LDAPSURL, false, "", auth.ErrUnavailable, "certificate signed by unknown authority"},
		{"ldaps with the wrong host name", strings.Replace(s.LDAPSURL, "127.0.0.1", "127.0.0.2", 1), false, caFile, auth.ErrUnavailable, "127.0.0.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(s.PasswordFile, tt.url)
			cfg.StartTLS = tt.startTLS
			cfg.CAFile = tt.caFile
			d, logs := newDirectory(t, cfg)
			u, err := d.LookupUser(t.Context(), "alice")
			if tt.want == nil {
				if err != nil || u.UID != 5001 {
					t.Fatalf("LookupUser(alice) = %v, %v", u, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("LookupUser(alice) = %v, %v; want %v", u, err, tt.want)
			}
			logs.mustContain(t, "level=WARN", "ldap server failed", tt.log)
		})
	}
}

// The CA rotates: the server restarts with a certificate from a new CA, and
// the directory follows once the CA file is replaced, without a restart.
func TestCAFileRotation(t *testing.T) {
	t.Parallel()
	ca1, ca2 := slapd.NewCA(t, "CA 2026"), slapd.NewCA(t, "CA 2027")
	s := slapd.Start(t, slapd.Options{TLS: ca1})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	ca1.WriteCert(t, caFile)
	cfg := testConfig(s.PasswordFile, s.URL)
	cfg.StartTLS = true
	cfg.CAFile = caFile
	cfg.CacheTTL, cfg.StaleIfError = 0, 0
	d, logs := newDirectory(t, cfg)
	if _, err := d.LookupUser(t.Context(), "alice"); err != nil {
		t.Fatalf("with CA 1: %v", err)
	}

	s.Restart(ca2)
	if _, err := d.LookupUser(t.Context(), "alice"); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("server on CA 2, file on CA 1: %v; want ErrUnavailable", err)
	}
	logs.mustContain(t, "ldap server failed", "unknown authority")

	// A half-written file keeps the old CA (and says so).
	writeFile(t, caFile, "-----BEGIN CERT")
	if _, err := d.LookupUser(t.Context(), "alice"); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("garbage CA file: %v", err)
	}
	logs.mustContain(t, "level=WARN", "no PEM certificate", "keeping the CA loaded before")

	ca2.WriteCert(t, caFile)
	if _, err := d.LookupUser(t.Context(), "alice"); err != nil {
		t.Fatalf("after the CA file was rotated: %v", err)
	}
	logs.mustContain(t, "level=INFO", "CA file changed")
}

// The bind password file is read for each new connection.
func TestBindPasswordFile(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	pw := filepath.Join(t.TempDir(), "password")
	writeFile(t, pw, "wrong\n")
	cfg := testConfig(pw, s.URL)
	cfg.CacheTTL, cfg.StaleIfError = 0, 0
	d, logs := newDirectory(t, cfg)
	if _, err := d.LookupUser(t.Context(), "alice"); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("wrong password: %v; want ErrUnavailable", err)
	}
	logs.mustContain(t, "level=ERROR", "bind refused", "user=alice")
	if strings.Contains(logs.String(), "wrong") {
		t.Error("the log shows the password")
	}
	writeFile(t, pw, slapd.BindPassword+"\r\n")
	if _, err := d.LookupUser(t.Context(), "alice"); err != nil {
		t.Fatalf("after fixing the password file: %v", err)
	}

	cfg.BindPasswordFile = filepath.Join(t.TempDir(), "missing")
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "bind password file") {
		t.Errorf("New with a missing password file: %v", err)
	}
	cfg.BindPasswordFile = pw
	cfg.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "CA file") {
		t.Errorf("New with a missing CA file: %v", err)
	}
}

// Two servers: the first is killed mid-test, lookups go on through the
// second; then both are killed and the stale cache answers.
func TestFailoverAndStaleIfError(t *testing.T) {
	t.Parallel()
	a := slapd.Start(t, slapd.Options{})
	b := slapd.Start(t, slapd.Options{})
	base := testConfig(a.PasswordFile, a.URL, b.URL)
	base.CacheTTL = 200 * time.Millisecond

	cfg := base
	cfg.StaleIfError = time.Minute
	d, logs := newDirectory(t, cfg)
	noStale := base
	noStale.StaleIfError = 0
	dNoStale, _ := newDirectory(t, noStale)
	shortStale := base
	shortStale.StaleIfError = 300 * time.Millisecond
	dShortStale, _ := newDirectory(t, shortStale)

	for _, dir := range []*Directory{d, dNoStale, dShortStale} {
		if _, err := dir.LookupUser(t.Context(), "alice"); err != nil {
			t.Fatalf("both servers up: %v", err)
		}
	}
	if _, err := d.LookupTool(t.Context(), "mytool"); err != nil {
		t.Fatal(err)
	}

	a.Kill()
	// bob was never looked up: he must come from b, through a new connection.
	if u, err := d.LookupUser(t.Context(), "bob"); err != nil || u.UID != 5002 {
		t.Fatalf("first server killed: LookupUser(bob) = %v, %v", u, err)
	}
	logs.mustContain(t, "level=WARN", "ldap server failed", "server="+a.URL)

	b.Kill()
	time.Sleep(500 * time.Millisecond) // every cached answer is now stale
	u, err := d.LookupUser(t.Context(), "alice")
	if err != nil || u.UID != 5001 || len(u.Keys) != 1 || !u.Maintains("mytool") {
		t.Fatalf("both killed, stale_if_error 1m: LookupUser(alice) = %+v, %v; want the stale answer", u, err)
	}
	logs.mustContain(t, "level=WARN", "serving a stale cached answer", "user=alice", "age=")
	if acct, err := d.LookupTool(t.Context(), "mytool"); err != nil || acct.UID != 52001 {
		t.Errorf("both killed: LookupTool(mytool) = %v, %v; want the stale answer", acct, err)
	}
	if _, err := d.LookupUser(t.Context(), "carol"); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("both killed, never cached: %v; want ErrUnavailable", err)
	}
	if _, err := dNoStale.LookupUser(t.Context(), "alice"); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("both killed, stale_if_error 0: %v; want ErrUnavailable", err)
	}
	if _, err := dShortStale.LookupUser(t.Context(), "alice"); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("both killed, stale period over: %v; want ErrUnavailable", err)
	}
}

// A server that accepts connections and never answers costs one dial
// timeout, then the next server answers.
func TestHungServer(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	hung := "ldap://" + slapd.Blackhole(t)
	cfg := testConfig(s.PasswordFile, hung, s.URL)
	cfg.DialTimeout = 300 * time.Millisecond
	d, logs := newDirectory(t, cfg)
	start := time.Now()
	if _, err := d.LookupUser(t.Context(), "alice"); err != nil {
		t.Fatalf("hung first server: %v", err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 3*time.Second {
		t.Errorf("lookup took %s; want about the dial timeout", el)
	}
	logs.mustContain(t, "ldap server does not answer", "server="+hung)
	// The hung server is now tried last: the next new connection is quick.
	d.pool.dropIdle() // the next lookup dials
	start = time.Now()
	if _, err := d.LookupUser(t.Context(), "bob"); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 250*time.Millisecond {
		t.Errorf("second lookup took %s: the hung server was tried first again", el)
	}

	// Only hung servers: the caller's context bounds the wait.
	cfg = testConfig(s.PasswordFile, hung)
	cfg.DialTimeout = 10 * time.Second
	d2, _ := newDirectory(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := d2.LookupUser(ctx, "alice"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hung server, caller gives up: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("caller waited %s", el)
	}
	// Close stops the lookup still in flight (goleak checks the rest).
	d2.Close()
}

func TestPoolReuse(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	proxy := slapd.NewProxy(t, strings.TrimSuffix(strings.TrimPrefix(s.URL, "ldap://"), "/"))
	cfg := testConfig(s.PasswordFile, "ldap://"+proxy.Addr)
	cfg.CacheTTL, cfg.NegativeTTL = 0, 0 // every lookup goes to LDAP
	d, _ := newDirectory(t, cfg)

	for i := range 30 {
		name := []string{"alice", "bob", "carol", "nobody"}[i%4]
		if _, err := d.LookupUser(t.Context(), name); err != nil && !errors.Is(err, auth.ErrNotFound) {
			t.Fatal(err)
		}
	}
	if n := proxy.Accepted(); n != 1 {
		t.Errorf("30 sequential lookups opened %d connections; want 1", n)
	}

	// A broken connection is replaced, and the caller does not notice.
	proxy.CutAll()
	time.Sleep(50 * time.Millisecond)
	if _, err := d.LookupUser(t.Context(), "alice"); err != nil {
		t.Fatalf("after the connection was cut: %v", err)
	}
	if n := proxy.Accepted(); n != 2 {
		t.Errorf("connections after a cut: %d; want 2", n)
	}

	// A burst of 200 logins by 40 people opens at most pool_size connections.
	before := proxy.Accepted()
	burst(t, d, 200, 40)
	if n := proxy.Accepted() - before; n > cfg.PoolSize {
		t.Errorf("a burst of 200 logins opened %d connections; pool_size is %d", n, cfg.PoolSize)
	}
	if n := proxy.Open(); n > cfg.PoolSize {
		t.Errorf("%d connections open after the burst; pool_size is %d", n, cfg.PoolSize)
	}
}

// With the cache on, 200 simultaneous logins of the same 5 users cost 5
// searches and one connection.
func TestBurstCoalesced(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	proxy := slapd.NewProxy(t, strings.TrimSuffix(strings.TrimPrefix(s.URL, "ldap://"), "/"))
	cfg := testConfig(s.PasswordFile, "ldap://"+proxy.Addr)
	cfg.PoolSize = 1
	d, _ := newDirectory(t, cfg)
	burst(t, d, 200, 5)
	if n := d.fetches.Load(); n != 5 {
		t.Errorf("200 logins of 5 users made %d LDAP lookups; want 5", n)
	}
	if n := proxy.Accepted(); n != 1 {
		t.Errorf("200 logins opened %d connections; want 1", n)
	}
}

// burst runs n concurrent lookups over users distinct names (the seeded
// people first, then unknown ones).
func burst(t *testing.T, d *Directory, n, users int) {
	t.Helper()
	names := []string{"alice", "bob", "carol"}
	for i := len(names); i < users; i++ {
		names = append(names, "user"+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	names = names[:users]
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			if _, err := d.LookupUser(t.Context(), names[i%users]); err != nil && !errors.Is(err, auth.ErrNotFound) {
				errs <- err
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("burst lookup: %v", err)
	}
}

func TestNegativeAndPositiveCache(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	admin := s.Admin(t)
	cfg := testConfig(s.PasswordFile, s.URL)
	cfg.NegativeTTL = 400 * time.Millisecond
	cfg.CacheTTL = 400 * time.Millisecond
	d, _ := newDirectory(t, cfg)

	// Unknown, then created: still unknown until the negative entry expires.
	if _, err := d.LookupUser(t.Context(), "newbie"); !errors.Is(err, auth.ErrNotFound) {
		t.Fatal(err)
	}
	addPerson(t, admin, "newbie", 5100)
	if _, err := d.LookupUser(t.Context(), "newbie"); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("within negative_ttl: %v; want the cached ErrNotFound", err)
	}
	if n := d.fetches.Load(); n != 1 {
		t.Errorf("%d LDAP lookups; want 1 (the second from the negative cache)", n)
	}
	time.Sleep(500 * time.Millisecond)
	if u, err := d.LookupUser(t.Context(), "newbie"); err != nil || u.UID != 5100 {
		t.Fatalf("after negative_ttl: %v, %v", u, err)
	}

	// Known, then deleted: known until cache_ttl, then gone, even when LDAP
	// goes down afterwards (a real "not found" is never overridden by stale).
	if err := admin.Del(ldapDel("uid=newbie,ou=people," + slapd.Base)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.LookupUser(t.Context(), "newbie"); err != nil {
		t.Errorf("within cache_ttl: %v; want the cached answer", err)
	}
	time.Sleep(500 * time.Millisecond)
	if _, err := d.LookupUser(t.Context(), "newbie"); !errors.Is(err, auth.ErrNotFound) {
		t.Fatalf("deleted, after cache_ttl: %v", err)
	}
	s.Kill()
	if _, err := d.LookupUser(t.Context(), "newbie"); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("deleted, then LDAP down: %v; want ErrNotFound", err)
	}
}

func TestKillSwitch(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	cfg := testConfig(s.PasswordFile, s.URL)
	cfg.KillSwitchFile = filepath.Join(t.TempDir(), "block-ldap-key-lookup")
	d, logs := newDirectory(t, cfg)
	if _, err := d.LookupUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg.KillSwitchFile, "")
	for range 3 {
		_, err := d.LookupUser(t.Context(), "alice") // cached, and still refused
		if !errors.Is(err, auth.ErrBlocked) {
			t.Fatalf("kill-switch file present: %v; want ErrBlocked", err)
		}
		if msg := auth.UserMessage(err); !strings.Contains(msg, "disabled by the operators") {
			t.Errorf("user reads %q", msg)
		}
	}
	if _, err := d.LookupTool(t.Context(), "mytool"); !errors.Is(err, auth.ErrBlocked) {
		t.Errorf("LookupTool with the kill-switch file: %v", err)
	}
	if n := strings.Count(logs.String(), "kill-switch file exists"); n != 1 {
		t.Errorf("the switch was logged %d times; want once", n)
	}
	removeFile(t, cfg.KillSwitchFile)
	if _, err := d.LookupUser(t.Context(), "alice"); err != nil {
		t.Fatalf("kill-switch file removed: %v", err)
	}
	logs.mustContain(t, "kill-switch file removed")

	cfg.KillSwitch = true
	d2, _ := newDirectory(t, cfg)
	if _, err := d2.LookupUser(t.Context(), "alice"); !errors.Is(err, auth.ErrBlocked) {
		t.Errorf("ldap.kill_switch: %v; want ErrBlocked", err)
	}
}

// A pooled connection that silently stops answering (half-open) costs one
// operation timeout; the lookup is retried on a new connection.
func TestHalfOpenConnection(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	proxy := slapd.NewProxy(t, strings.TrimSuffix(strings.TrimPrefix(s.URL, "ldap://"), "/"))
	cfg := testConfig(s.PasswordFile, "ldap://"+proxy.Addr)
	cfg.Timeout = 300 * time.Millisecond
	cfg.CacheTTL = 0
	d, logs := newDirectory(t, cfg)
	if _, err := d.LookupUser(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	proxy.FreezeAll()
	start := time.Now()
	if u, err := d.LookupUser(t.Context(), "bob"); err != nil || u.UID != 5002 {
		t.Fatalf("after the pooled connection froze: %v, %v", u, err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 3*time.Second {
		t.Errorf("lookup took %s; want about one operation timeout", el)
	}
	if n := proxy.Accepted(); n != 2 {
		t.Errorf("%d connections; want 2 (the frozen one replaced)", n)
	}
	// The server is suspected hung, then answers on the new connection.
	logs.mustContain(t, "level=WARN", "does not answer (hung?)", "server="+cfg.URLs[0])
	logs.mustContain(t, "level=INFO", "answers again")
}

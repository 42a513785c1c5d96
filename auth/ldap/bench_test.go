package ldap

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/bastion-ssh/bastion/integration/slapd"
)

// BenchmarkLookupUserCached: a login of a user looked up less than
// cache_ttl ago (no LDAP traffic).
func BenchmarkLookupUserCached(b *testing.B) {
	s := slapd.Start(b, slapd.Options{})
	d, _ := newDirectory(b, testConfig(s.PasswordFile, s.URL))
	if _, err := d.LookupUser(b.Context(), "alice"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.LookupUser(b.Context(), "alice"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookupUserUncached: every login asks slapd (cache_ttl 0): a
// person search and a group search per group base, on a pooled connection
// (StartTLS and a bind happen once).
func BenchmarkLookupUserUncached(b *testing.B) {
	ca := slapd.NewCA(b, "bench CA")
	s := slapd.Start(b, slapd.Options{TLS: ca})
	cfg := testConfig(s.PasswordFile, s.URL)
	cfg.CacheTTL = 0
	cfg.StartTLS = true
	cfg.CAFile = b.TempDir() + "/ca.pem"
	ca.WriteCert(b, cfg.CAFile)
	d, _ := newDirectory(b, cfg)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.LookupUser(b.Context(), "alice"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(d.pool.dials.Load()), "conns")
}

// BenchmarkLoginBurst: 200 simultaneous logins of 200 different users (3
// real, the rest unknown), nothing cached: the LDAP connections opened
// stay within pool_size.
func BenchmarkLoginBurst(b *testing.B) {
	s := slapd.Start(b, slapd.Options{})
	proxy := slapd.NewProxy(b, strings.TrimSuffix(strings.TrimPrefix(s.URL, "ldap://"), "/"))
	cfg := testConfig(s.PasswordFile, "ldap://"+proxy.Addr)
	cfg.CacheTTL, cfg.NegativeTTL = 0, 0
	d, _ := newDirectory(b, cfg)
	names := []string{"alice", "bob", "carol"}
	for i := len(names); i < 200; i++ {
		names = append(names, fmt.Sprintf("user%d", i))
	}
	for b.Loop() {
		var wg sync.WaitGroup
		for _, n := range names {
			wg.Go(func() { _, _ = d.LookupUser(b.Context(), n) })
		}
		wg.Wait()
	}
	b.ReportMetric(float64(proxy.Accepted()), "conns")
	if proxy.Accepted() > cfg.PoolSize {
		b.Errorf("%d connections for pool_size %d", proxy.Accepted(), cfg.PoolSize)
	}
}

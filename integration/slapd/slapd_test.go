package slapd

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// TestStartSeeded starts a TLS server and reads the seeded tree through
// the bastion's bind DN, over StartTLS.
func TestStartSeeded(t *testing.T) {
	ca := NewCA(t, "test CA")
	s := Start(t, Options{TLS: ca})
	admin := s.Admin(t)
	res, err := admin.Search(ldap.NewSearchRequest("ou=people,"+Base, ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
		0, 0, false, "(uid=*)", []string{"uid", "pwdPolicySubentry"}, nil))
	if err != nil {
		t.Fatalf("search people: %v", err)
	}
	var uids []string
	for _, e := range res.Entries {
		uids = append(uids, e.GetAttributeValue("uid"))
	}
	slices.Sort(uids)
	if got := strings.Join(uids, ","); got != "alice,bob,carol,dave,erin,frank" {
		t.Errorf("people = %s", got)
	}
	if s.LDAPSURL == "" {
		t.Fatal("no ldaps URL with TLS set")
	}
	if !strings.Contains(AuthorizedKey("alice-1"), "ssh-ed25519 ") {
		t.Errorf("AuthorizedKey = %q", AuthorizedKey("alice-1"))
	}
}

func TestRenderLDIF(t *testing.T) {
	out, err := RenderLDIF(`dn: {{.Base}}` + "\n" + `k:: {{keys64 "bob-1" "# c" "" "junk"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "dn: "+Base) || !strings.Contains(out, "k:: ") {
		t.Errorf("rendered %q", out)
	}
	first, again := AuthorizedKey("x-1"), AuthorizedKey("x-1")
	if first != again || first == AuthorizedKey("x-2") {
		t.Error("test keys are not deterministic per name")
	}
}

// Pause stops slapd for real: a search does not answer until Resume.
func TestPauseResume(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	s.Pause()
	done := make(chan error, 1)
	go func() { done <- ping(s.URL) }()
	select {
	case err := <-done:
		t.Fatalf("paused slapd answered: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	s.Resume()
	if err := <-done; err != nil {
		t.Errorf("after Resume: %v", err)
	}
}

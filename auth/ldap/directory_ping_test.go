package ldap

import (
	"testing"

	"github.com/bastion-ssh/bastion/integration/slapd"
)

func TestPing(t *testing.T) {
	t.Parallel()
	a := slapd.Start(t, slapd.Options{})
	d, _ := newDirectory(t, testConfig(a.PasswordFile, a.URL))
	if err := d.Ping(t.Context()); err != nil {
		t.Fatalf("Ping with slapd up: %v", err)
	}
	a.Kill()
	if err := d.Ping(t.Context()); err == nil {
		t.Fatal("Ping with slapd down: no error")
	}
}

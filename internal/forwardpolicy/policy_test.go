package forwardpolicy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bastion-ssh/bastion/config"
)

func policy(t *testing.T, backend any, allow ...string) *Policy {
	t.Helper()
	p, err := New(config.Forwarding{Allow: allow}, backend)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestForwardPolicy(t *testing.T) {
	tests := []struct {
		allow   []string
		host    string
		port    uint32
		want    string
		wantErr bool
	}{
		{[]string{"127.0.0.0/8:*"}, "127.0.0.1", 80, "127.0.0.1:80", false},
		{[]string{"127.0.0.0/8:*"}, "10.0.0.1", 80, "", true},
		{[]string{"127.0.0.1:5432"}, "127.0.0.1", 5433, "", true},
		{[]string{"127.0.0.1:5000-5010"}, "127.0.0.1", 5005, "127.0.0.1:5005", false},
		{[]string{"*.db.example.org:3306"}, "x.db.example.org", 3306, "x.db.example.org:3306", false},
		{[]string{"*.db.example.org:3306"}, "db.example.org.evil.com", 3306, "", true},
		{[]string{"[::1]:*"}, "::1", 22, "[::1]:22", false},
		{[]string{"127.0.0.0/8:*"}, "localhost", 22, "127.0.0.1:22", false},
		{nil, "127.0.0.1", 22, "", true},
		{[]string{"127.0.0.0/8:*"}, "127.0.0.1", 70000, "", true},
	}
	for _, tt := range tests {
		got, err := policy(t, nil, tt.allow...).Check(context.Background(), nil, tt.host, tt.port)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Check(%v, %s, %d) = %q, %v; want %q, err %v", tt.allow, tt.host, tt.port, got, err, tt.want, tt.wantErr)
		}
	}
}

type keyDenies struct{ err error }

func (k keyDenies) AllowsOpen(string, uint32) error { return k.err }

type cluster map[string]bool

func (c cluster) InCluster(host string) bool { return c[host] }

// TestCheckOrder: the key's restrictions come first, even for the
// backend's own names; the backend's names skip forwarding.allow.
func TestCheckOrder(t *testing.T) {
	ctx := context.Background()
	backend := cluster{"web.team-a": true}
	p := policy(t, backend) // empty allow list: only the backend's names
	if got, err := p.Check(ctx, keyDenies{}, "web.team-a", 80); err != nil || got != "web.team-a:80" {
		t.Errorf("in-cluster name = %q, %v; want web.team-a:80", got, err)
	}
	if _, err := p.Check(ctx, keyDenies{}, "127.0.0.1", 80); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("outside name with empty allow list: err = %v, want disabled", err)
	}
	deny := errors.New("port forwarding is not allowed for this key")
	if _, err := p.Check(ctx, keyDenies{deny}, "web.team-a", 80); !errors.Is(err, deny) {
		t.Errorf("key restriction: err = %v, want %v", err, deny)
	}
	if _, err := policy(t, struct{}{}, "127.0.0.0/8:*").Check(ctx, nil, "web.team-a", 80); err == nil {
		t.Error("a backend without ClusterNames claimed web.team-a")
	}
}

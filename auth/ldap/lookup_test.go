package ldap

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/integration/slapd"
)

func TestLookupUser(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	d, _ := newDirectory(t, testConfig(s.PasswordFile, s.URL))
	tests := []struct {
		name   string
		want   auth.Account
		keys   []string
		groups []string
		tools  []string
	}{
		{"alice", auth.Account{Name: "alice", UID: 5001, GID: 500, Home: "/home/alice", Shell: "/bin/bash", GIDs: []int{50380, 52001}},
			testKeys("alice-1"), []string{"project-tools", "tools.ghosttool", "tools.mytool", "wikidev"}, []string{"ghosttool", "mytool"}},
		{"bob", auth.Account{Name: "bob", UID: 5002, GID: 500, Home: "/home/bob", Shell: "/bin/zsh", GIDs: []int{50380, 52001, 52002}},
			testKeys("bob-1", "bob-2", "bob-3"), []string{"project-tools", "tools.mytool", "tools.othertool"}, []string{"mytool", "othertool"}},
		{"carol", auth.Account{Name: "carol", UID: 5003, GID: 500, Home: "/home/carol", Shell: "", GIDs: []int{50380}},
			testKeys("carol-1", "carol-2"), []string{"project-tools", "tools.dntool"}, []string{"dntool"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := d.LookupUser(t.Context(), tt.name)
			if err != nil {
				t.Fatalf("LookupUser(%s): %v", tt.name, err)
			}
			got := u.Account
			if got.Name != tt.want.Name || got.UID != tt.want.UID || got.GID != tt.want.GID || got.Home != tt.want.Home ||
				got.Shell != tt.want.Shell || !slices.Equal(got.GIDs, tt.want.GIDs) {
				t.Errorf("account = %+v, want %+v", got, tt.want)
			}
			if k := keyStrings(u.Keys); !slices.Equal(k, tt.keys) {
				t.Errorf("keys = %q, want %q", k, tt.keys)
			}
			if !slices.Equal(u.Groups, tt.groups) {
				t.Errorf("groups = %q, want %q", u.Groups, tt.groups)
			}
			if !slices.Equal(u.Tools, tt.tools) {
				t.Errorf("tools = %q, want %q", u.Tools, tt.tools)
			}
		})
	}
}

func TestLookupUserRefused(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	d, logs := newDirectory(t, testConfig(s.PasswordFile, s.URL))
	tests := []struct {
		name string
		want error
		log  []string // a log line with all of these
	}{
		{"dave", auth.ErrNotFound, nil},  // disabled by pwdPolicySubentry
		{"frank", auth.ErrNotFound, nil}, // no ldapPublicKey
		{"nobody", auth.ErrNotFound, nil},
		{"ALICE", auth.ErrNotFound, []string{"only by case", "user=ALICE"}},
		{"erin", auth.ErrInvalidEntry, []string{"level=ERROR", "missing uidNumber", "missing homeDirectory", "user=erin", `dn="uid=erin,ou=people`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := d.LookupUser(t.Context(), tt.name)
			if !errors.Is(err, tt.want) {
				t.Fatalf("LookupUser(%s) = %v, %v; want an error wrapping %v", tt.name, u, err, tt.want)
			}
			if tt.log != nil {
				logs.mustContain(t, tt.log...)
			}
		})
	}
}

func TestInvalidKeysSkipped(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	d, logs := newDirectory(t, testConfig(s.PasswordFile, s.URL))
	u, err := d.LookupUser(t.Context(), "carol")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keyStrings(u.Keys), testKeys("carol-1", "carol-2"); !slices.Equal(got, want) {
		t.Errorf("keys = %q, want %q", got, want)
	}
	logs.mustContain(t, "level=WARN", "does not parse", "user=carol", "position=sshPublicKey[1]")
	logs.mustContain(t, "level=WARN", "does not parse", "user=carol", `position="sshPublicKey[2] line 4"`)
}

func TestLookupTool(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	d, _ := newDirectory(t, testConfig(s.PasswordFile, s.URL))
	tests := []struct {
		tool string
		want auth.Account
		err  error
	}{
		{"mytool", auth.Account{Name: "tools.mytool", UID: 52001, GID: 52001, Home: "/data/project/mytool", Shell: "/bin/bash"}, nil},
		{"othertool", auth.Account{Name: "tools.othertool", UID: 52002, GID: 52002, Home: "/data/project/othertool", Shell: "/bin/bash"}, nil},
		{"dntool", auth.Account{Name: "tools.dntool", UID: 52003, GID: 52003, Home: "/data/project/dntool"}, nil},
		{"ghosttool", auth.Account{}, auth.ErrNotFound}, // a group, but no account
		{"alice", auth.Account{}, auth.ErrNotFound},     // a person, not a tool
		{"*", auth.Account{}, auth.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			a, err := d.LookupTool(t.Context(), tt.tool)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("LookupTool(%s) = %+v, %v; want %v", tt.tool, a, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LookupTool(%s): %v", tt.tool, err)
			}
			if a.Name != tt.want.Name || a.UID != tt.want.UID || a.GID != tt.want.GID || a.Home != tt.want.Home ||
				a.Shell != tt.want.Shell || len(a.GIDs) != 0 {
				t.Errorf("account = %+v, want %+v", *a, tt.want)
			}
		})
	}
	// The tool's supplementary groups: put tools.mytool in a project group.
	admin := s.Admin(t)
	addMemberUid(t, admin, "cn=project-tools,ou=groups,"+slapd.Base, "tools.dntool")
	d2, _ := newDirectory(t, testConfig(s.PasswordFile, s.URL))
	a, err := d2.LookupTool(t.Context(), "dntool")
	if err != nil || !slices.Equal(a.GIDs, []int{50380}) {
		t.Errorf("LookupTool(dntool) = %+v, %v; want GIDs [50380]", a, err)
	}
}

// Names carrying filter syntax never reach LDAP and never log in.
func TestFilterInjection(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	proxy := slapd.NewProxy(t, s.URL[len("ldap://"):len(s.URL)-1])
	d, _ := newDirectory(t, testConfig(s.PasswordFile, "ldap://"+proxy.Addr))
	names := []string{
		"*", "alice*", "*)(uid=*", ")(uid=*", "alice)(uid=*", "alice)(|(uid=*)", "(uid=alice)",
		"a\x00b", "alice\x00", "alice\n", " alice", "alice ", "al\\ice", "-alice", ".alice",
		"", strings.Repeat("a", auth.MaxNameLen+1), strings.Repeat("*", 10000), "alice,ou=people", "uid=alice",
	}
	for _, name := range names {
		if u, err := d.LookupUser(t.Context(), name); !errors.Is(err, auth.ErrNotFound) {
			t.Errorf("LookupUser(%q) = %v, %v; want ErrNotFound", name, u, err)
		}
		if a, err := d.LookupTool(t.Context(), name); !errors.Is(err, auth.ErrNotFound) {
			t.Errorf("LookupTool(%q) = %v, %v; want ErrNotFound", name, a, err)
		}
	}
	if n := d.fetches.Load(); n != 0 || proxy.Accepted() != 0 {
		t.Errorf("bad names reached LDAP: %d lookups, %d connections", n, proxy.Accepted())
	}
	// The longest valid name is still looked up (and escaped).
	if _, err := d.LookupUser(t.Context(), strings.Repeat("a", auth.MaxNameLen)); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("long valid name: %v", err)
	}
	if d.fetches.Load() != 1 {
		t.Errorf("a valid name did not reach LDAP")
	}
}

// A user in more groups than size_limit is refused, not half-read.
func TestSizeLimit(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	cfg := testConfig(s.PasswordFile, s.URL)
	cfg.SizeLimit = 1
	d, logs := newDirectory(t, cfg)
	if _, err := d.LookupUser(t.Context(), "bob"); !errors.Is(err, auth.ErrInvalidEntry) {
		t.Fatalf("LookupUser(bob) with size_limit 1: %v; want ErrInvalidEntry", err)
	}
	logs.mustContain(t, "too many groups", "user=bob")
	if _, err := d.LookupUser(t.Context(), "dave"); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("a refused user leaks another's state: %v", err)
	}
}

// A filter template that matches several people refuses them all.
func TestAmbiguousFilter(t *testing.T) {
	t.Parallel()
	s := slapd.Start(t, slapd.Options{})
	cfg := testConfig(s.PasswordFile, s.URL)
	cfg.UserFilter = "(|(uid={name})(uid=bob))"
	d, logs := newDirectory(t, cfg)
	if _, err := d.LookupUser(t.Context(), "alice"); !errors.Is(err, auth.ErrInvalidEntry) {
		t.Fatalf("ambiguous match: %v; want ErrInvalidEntry", err)
	}
	logs.mustContain(t, "several entries match", "user=alice")
}

func TestUnavailableMessage(t *testing.T) {
	t.Parallel()
	cfg := testConfig("", "ldap://127.0.0.1:1")
	cfg.BindDN = ""
	d, _ := newDirectory(t, cfg)
	_, err := d.LookupUser(t.Context(), "alice")
	if !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("no server: %v; want ErrUnavailable", err)
	}
	if msg := auth.UserMessage(err); msg != "directory unavailable, try again" {
		t.Errorf("user reads %q", msg)
	}
}

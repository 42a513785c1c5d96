package auth

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseKeyOptions(t *testing.T) {
	t.Parallel()
	all := KeyOptions{Restrict: true, NoPortForwarding: true, NoAgentForwarding: true, NoX11Forwarding: true, NoPTY: true, NoUserRC: true}
	tests := []struct {
		in      string
		want    KeyOptions
		wantErr string // substring; "" = no error
		unsupp  bool
	}{
		{in: "", want: KeyOptions{}},
		{in: "restrict", want: all},
		{in: "RESTRICT", want: all},
		{in: "restrict,pty", want: func() KeyOptions { o := all; o.NoPTY = false; return o }()},
		{in: "restrict,port-forwarding,permitopen=\"db:5432\"", want: func() KeyOptions {
			o := all
			o.NoPortForwarding = false
			o.PermitOpen = []string{"db:5432"}
			return o
		}()},
		{in: "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-user-rc",
			want: KeyOptions{NoPTY: true, NoPortForwarding: true, NoAgentForwarding: true, NoX11Forwarding: true, NoUserRC: true}},
		{in: `command="echo \"hi\" there"`, want: KeyOptions{Command: `echo "hi" there`, HasCommand: true}},
		{in: `command=""`, want: KeyOptions{Command: "", HasCommand: true}},
		{in: `Command="rsync --server -vlogDtpre.iLsfxC . /backup"`, want: KeyOptions{Command: "rsync --server -vlogDtpre.iLsfxC . /backup", HasCommand: true}},
		{in: `command="a",command="b"`, wantErr: `multiple "command"`},
		{in: `command=unquoted`, wantErr: "missing start quote"},
		{in: `command="open`, wantErr: "missing end quote"},
		{in: `from="10.0.0.0/8,!10.9.9.9,*.example.org"`, want: KeyOptions{From: "10.0.0.0/8,!10.9.9.9,*.example.org"}},
		{in: `from="10.0.0.1/8"`, wantErr: "inconsistent mask"},
		{in: `from="a",from="b"`, wantErr: `multiple "from"`},
		{in: `from="a,,b"`, wantErr: "empty entry"},
		{in: `expiry-time="20300101"`, want: KeyOptions{ExpiryTime: time.Date(2030, 1, 1, 0, 0, 0, 0, time.Local)}},
		{in: `expiry-time="203001021530Z",expiry-time="20300103"`, want: KeyOptions{ExpiryTime: time.Date(2030, 1, 2, 15, 30, 0, 0, time.UTC)}},
		{in: `expiry-time="20300102153045UTC"`, want: KeyOptions{ExpiryTime: time.Date(2030, 1, 2, 15, 30, 45, 0, time.UTC)}},
		{in: `expiry-time="2030"`, wantErr: "invalid expires time"},
		{in: `expiry-time="20301399"`, wantErr: "invalid expires time"},
		{in: `environment="FOO=bar"`, want: KeyOptions{Environment: []string{"FOO=bar"}}},
		{in: `environment="1-BAD=x"`, wantErr: "invalid environment"},
		{in: `environment="NOEQUALS"`, wantErr: "invalid environment"},
		{in: `permitopen="host:80",permitopen="[::1]:*"`, want: KeyOptions{PermitOpen: []string{"host:80", "[::1]:*"}}},
		{in: `permitopen="host"`, wantErr: "invalid permission port"},
		{in: `permitopen="host:0"`, wantErr: "invalid permission port"},
		{in: `permitopen=":80"`, wantErr: "invalid permission hostname"},
		{in: `permitlisten="8080"`, want: KeyOptions{PermitListen: []string{"*:8080"}}},
		{in: `cert-authority,principals="alice,backup"`, want: KeyOptions{CertAuthority: true, Principals: []string{"alice", "backup"}}},
		{in: `principals="alice"`, wantErr: "not a cert-authority"},
		{in: `verify-required`, unsupp: true},
		{in: `no-touch-required`, unsupp: true},
		{in: `tunnel="0"`, unsupp: true},
		{in: `no-such-option`, wantErr: "unknown key option"},
		{in: `restrictx`, wantErr: "unknown key option"},
		{in: `no-restrict`, wantErr: "unknown key option"},
		{in: `restrict,`, wantErr: "unexpected end of options"},
		{in: `pty;x`, wantErr: "unknown key option"},
	}
	for _, tt := range tests {
		got, err := ParseKeyOptions(tt.in)
		switch {
		case tt.unsupp:
			if !errors.Is(err, ErrUnsupportedOption) {
				t.Errorf("ParseKeyOptions(%q) error = %v, want ErrUnsupportedOption", tt.in, err)
			}
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseKeyOptions(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("ParseKeyOptions(%q): %v", tt.in, err)
		case !reflect.DeepEqual(got, tt.want):
			t.Errorf("ParseKeyOptions(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestMatchFrom(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr, list string
		want       bool
	}{
		{"10.1.2.3", "10.0.0.0/8", true},
		{"10.1.2.3", "10.1.2.3", true},
		{"10.1.2.3", "192.168.0.0/16", false},
		{"10.1.2.3", "10.0.0.0/8,!10.1.2.3", false},
		{"10.1.2.3", "!10.1.2.3,10.0.0.0/8", false},
		{"10.1.2.4", "10.0.0.0/8,!10.1.2.3", true},
		{"10.1.2.3", "10.1.2.*", true},
		{"10.1.2.3", "10.1.?.3", true},
		{"10.1.2.3", "!10.1.*", false},
		{"10.1.2.3", "*", true},
		{"10.1.2.3", "*,!10.1.2.3", false},
		{"2001:db8::1", "2001:db8::/32", true},
		{"::ffff:10.1.2.3", "10.0.0.0/8", true},
		{"127.0.0.1", "host.example.org", false},
		{"127.0.0.1", "!127.0.0.1", false},
	}
	for _, tt := range tests {
		got, err := matchFrom(netip.MustParseAddr(tt.addr), tt.list)
		if err != nil || got != tt.want {
			t.Errorf("matchFrom(%s, %q) = %v, %v; want %v", tt.addr, tt.list, got, err, tt.want)
		}
	}
	if _, err := matchFrom(netip.MustParseAddr("10.0.0.1"), "10.0.0.1/8"); err == nil {
		t.Error("inconsistent mask accepted")
	}
}

func TestMatchCIDRList(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		addr, list string
		want, err  bool
	}{
		{"10.1.2.3", "10.0.0.0/8", true, false},
		{"10.1.2.3", "192.168.0.1,10.1.2.3", true, false},
		{"10.1.2.3", "192.168.0.0/16", false, false},
		{"10.1.2.3", "10.1.2.*", false, true},
		{"10.1.2.3", "!10.1.2.3", false, true},
		{"10.1.2.3", "", false, true},
	} {
		got, err := matchCIDRList(netip.MustParseAddr(tt.addr), tt.list)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("matchCIDRList(%s, %q) = %v, %v", tt.addr, tt.list, got, err)
		}
	}
}

func TestPermitOpenAllows(t *testing.T) {
	t.Parallel()
	list := []string{"db.example.org:5432", "127.0.0.1:8080", "[::1]:*", "*:443"}
	for _, tt := range []struct {
		host string
		port uint32
		want bool
	}{
		{"db.example.org", 5432, true},
		{"db.example.org", 5433, false},
		{"DB.example.org", 5432, false}, // as OpenSSH: compared as written
		{"127.0.0.1", 8080, true},
		{"127.0.0.1", 8081, false},
		{"::1", 22, true},
		{"anything", 443, true},
		{"10.0.0.1", 80, false},
	} {
		if got := PermitOpenAllows(list, tt.host, tt.port); got != tt.want {
			t.Errorf("PermitOpenAllows(%s:%d) = %v", tt.host, tt.port, got)
		}
	}
	if !PermitOpenAllows(nil, "x", 1) {
		t.Error("nil list refused")
	}
	if PermitOpenAllows([]string{}, "x", 1) {
		t.Error("empty list allowed")
	}
}

func TestMatchPattern(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		s, p string
		want bool
	}{
		{"abc", "abc", true}, {"abc", "a*", true}, {"abc", "*c", true}, {"abc", "a?c", true},
		{"abc", "*", true}, {"", "*", true}, {"", "", true}, {"a", "", false},
		{"abc", "a*d", false}, {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "*a*a*a*a*a*a*a*a*c", false},
	} {
		if got := matchPattern(tt.s, tt.p); got != tt.want {
			t.Errorf("matchPattern(%q, %q) = %v", tt.s, tt.p, got)
		}
	}
}

// FuzzParseKeyOptions checks that the parser never panics, that what it
// accepts is stable under re-parsing of its canonical parts, and that
// restrict can never be undone by a later option into "no restriction"
// beyond what the options themselves say.
func FuzzParseKeyOptions(f *testing.F) {
	for _, s := range []string{
		"restrict", `command="echo hi",no-pty`, `from="10.0.0.0/8,!10.9.9.9"`, `permitopen="h:1",permitopen="[::1]:*"`,
		`expiry-time="20300101Z"`, `environment="A=b"`, `cert-authority,principals="a,b"`, `command="a\"b"`,
		"no-port-forwarding,port-forwarding", `tunnel="1"`, "restrict,pty,x11-forwarding", `command="`, ",,", "no-",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseKeyOptions(s)
		if err != nil {
			return
		}
		if o.Principals != nil && !o.CertAuthority {
			t.Fatalf("%q: principals without cert-authority accepted", s)
		}
		for _, p := range o.PermitOpen {
			if _, _, err := splitPermit(p); err != nil {
				t.Fatalf("%q: accepted bad permitopen %q", s, p)
			}
		}
		if o.From != "" {
			if err := checkFromList(o.From); err != nil {
				t.Fatalf("%q: accepted bad from %q", s, o.From)
			}
		}
		// A command survives quoting and parsing back.
		if o.HasCommand && !strings.Contains(o.Command, `\"`) && !strings.HasSuffix(o.Command, `\`) {
			q := `command="` + strings.ReplaceAll(o.Command, `"`, `\"`) + `"`
			back, err := ParseKeyOptions(q)
			if err != nil || back.Command != o.Command {
				t.Fatalf("%q: command %q does not round-trip (%q: %v)", s, o.Command, back.Command, err)
			}
		}
	})
}

package auth

import (
	"strings"
	"testing"
)

func TestParseLogin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Login
		wantErr bool
	}{
		{"alice", Login{User: "alice"}, false},
		{"alice+mytool", Login{User: "alice", Tool: "mytool"}, false},
		{"a.b-c_d", Login{User: "a.b-c_d"}, false},
		{"_svc", Login{User: "_svc"}, false},
		{"", Login{}, true},
		{"+tool", Login{}, true},
		{"alice+", Login{}, true},
		{"alice+a+b", Login{}, true},
		{"-alice", Login{}, true},
		{".alice", Login{}, true},
		{"*", Login{}, true},
		{")(uid=*", Login{}, true},
		{"alice\x00", Login{}, true},
		{"al ice", Login{}, true},
		{"alice/../x", Login{}, true},
		{"ålice", Login{}, true},
		{strings.Repeat("a", MaxNameLen), Login{User: strings.Repeat("a", MaxNameLen)}, false},
		{strings.Repeat("a", MaxNameLen+1), Login{}, true},
	}
	for _, tt := range tests {
		got, err := ParseLogin(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseLogin(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseLogin(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseLogin(f *testing.F) {
	for _, s := range []string{"alice", "alice+tool", ")(uid=*", "*", "a\x00b", "++", "a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLogin(s)
		if err != nil {
			return
		}
		for _, part := range []string{l.User, l.Tool} {
			if strings.ContainsAny(part, "*()\\\x00/ +=,") {
				t.Fatalf("ParseLogin(%q) accepted unsafe part %q", s, part)
			}
		}
		if l.Tool == "" && l.User != s {
			t.Fatalf("ParseLogin(%q) = %+v lost characters", s, l)
		}
		if l.Tool != "" && l.User+"+"+l.Tool != s {
			t.Fatalf("ParseLogin(%q) = %+v does not round-trip", s, l)
		}
	})
}

package sshd

import (
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestParsePtyRequest(t *testing.T) {
	good := ssh.Marshal(struct {
		Term             string
		Cols, Rows, W, H uint32
		Modes            string
	}{"xterm", 80, 24, 0, 0, string([]byte{3, 0, 0, 0, 127, 53, 0, 0, 0, 1, 0})})
	tests := []struct {
		name    string
		in      []byte
		wantErr bool
		cols    uint16
		modes   int
	}{
		{"good", good, false, 80, 2},
		{"truncated", good[:10], true, 0, 0},
		{"empty", nil, true, 0, 0},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff, 'x'}, true, 0, 0},
		{"no modes", good[:4+5+16], false, 80, 0},
	}
	for _, tt := range tests {
		p, err := parsePtyRequest(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: err %v", tt.name, err)
			continue
		}
		if err == nil && (p.Size.Cols != tt.cols || len(p.Modes) != tt.modes) {
			t.Errorf("%s: %+v", tt.name, p)
		}
	}
}

func FuzzParsePtyRequest(f *testing.F) {
	f.Add(ssh.Marshal(struct {
		Term             string
		Cols, Rows, W, H uint32
		Modes            string
	}{"xterm", 80, 24, 0, 0, "\x03\x00\x00\x00\x7f\x00"}))
	f.Add([]byte{0, 0, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePtyRequest(b)
		if err == nil && (p.Term == "" || len(p.Term) > maxTermLen) {
			t.Fatalf("accepted bad TERM %q", p.Term)
		}
		_, _ = parseWindowChange(b)
		_, _, _ = parseEnvRequest(b)
		_, _ = parseDirectTCPIP(b)
	})
}

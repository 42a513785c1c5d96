package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		yaml  string
		wants []string // substrings, each a key path + problem
	}{
		{"ok", "ssh:\n  host_keys: [/k]\ndirectory:\n  file: /u.yaml\n", nil},
		{"everything wrong at once", `
ssh:
  listen: "nonsense"
  host_keys: []
limits:
  max_auth_tries: 0
  idle_timeout: -1s
forwarding:
  allow: ["10.0.0.0/33:*", "host", "db:99999"]
directory:
  type: nis
log:
  format: xml
`, []string{
			"ssh.listen: want host:port",
			"ssh.host_keys: at least one host key file is required",
			"limits.max_auth_tries: must be at least 1",
			"limits.idle_timeout: must not be negative",
			"forwarding.allow[0]: bad CIDR",
			"forwarding.allow[1]: bad pattern",
			"forwarding.allow[2]: bad port",
			"directory.type: must be static or ldap",
			"log.format: must be json or text",
		}},
		{"bad port", "ssh:\n  listen: \":70000\"\n  host_keys: [/k]\ndirectory:\n  file: /u\n", []string{"ssh.listen: port must be a number from 0 to 65535"}},
		{"static needs file", "ssh:\n  host_keys: [/k]\n", []string{"directory.file: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = cfg.Validate()
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate: no error")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
			if got := strings.Count(err.Error(), "\n") + 1; got != len(tt.wants) {
				t.Errorf("%d problems reported, want %d:\n%v", got, len(tt.wants), err)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	tests := []struct{ yaml, want string }{
		{"bogus: 1\n", "field bogus not found"},
		{"limits:\n  idle_timout: 5s\n", "field idle_timout not found"},
		{"limits:\n  idle_timeout: soon\n", "line 2: cannot unmarshal"},
		{"log: {}\n---\nlog: {}\n", "more than one YAML document"},
		{"ssh: [\n", "parse"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", tt.yaml, err, tt.want)
		}
	}
}

func TestLoadResolvesRelativePaths(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte("ssh:\n  host_keys: [keys/ed25519]\ndirectory:\n  file: users.yaml\n"), 0o600)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SSH.HostKeys[0] != filepath.Join(dir, "keys/ed25519") || cfg.Directory.File != filepath.Join(dir, "users.yaml") {
		t.Fatalf("paths not resolved: %+v %+v", cfg.SSH.HostKeys, cfg.Directory)
	}
}

func TestForwardRule(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		wantErr bool
	}{
		{"127.0.0.1:*", false}, {"10.0.0.0/8:5432", false}, {"[::1]:22", false},
		{"[fd00::/8]:1-1024", false}, {"*.svc.cluster.local:80", false}, {"db:5432-5439", false},
		{"db", true}, {":80", true}, {"db:", true}, {"db:0", true}, {"db:9-1", true},
		{"db:x", true}, {"[::1:22", true}, {"d b:80", true}, {"[:80", true}, {"1.2.3.4/99:1", true},
	}
	for _, tt := range tests {
		_, err := ParseForwardRule(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseForwardRule(%q) err = %v, wantErr %v", tt.in, err, tt.wantErr)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("ssh:\n  listen: 127.0.0.1:22\n  host_keys: [/k]\nforwarding:\n  allow: [\"*:*\"]\n"))
	f.Add([]byte("limits: {idle_timeout: 1s}\n"))
	f.Add([]byte("ldap:\n  urls: [ldap://x]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := Parse(b)
		if err != nil {
			return
		}
		_ = cfg.Validate() // must not panic
	})
}

func FuzzParseForwardRule(f *testing.F) {
	for _, s := range []string{"127.0.0.1:*", "[::1]:22", "*.x:1-2", "10.0.0.0/8:5432"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseForwardRule(s)
		if err == nil && r.PortLo > r.PortHi {
			t.Fatalf("%q: inverted port range", s)
		}
	})
}

func TestAlgorithms(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		yaml string
		want []string // substrings of the error, in order; none: valid
	}{
		{"ciphers: [aes128-gcm@openssh.com, aes128-ctr, chacha20-poly1305@openssh.com]", nil},
		{"macs: [hmac-sha2-512-etm@openssh.com]\n  kex: [curve25519-sha256]", nil},
		{"ciphers: [aes128-gcm@openssh.com, aes128-ctr, 3des-cbc]", []string{"ssh.ciphers[2]: 3des-cbc is not supported; choose from aes128-gcm@openssh.com, aes256-gcm@openssh.com, chacha20-poly1305@openssh.com, aes128-ctr, aes192-ctr, aes256-ctr"}},
		{"macs: [hmac-sha1, hmac-sha2-256]", []string{"ssh.macs[0]: hmac-sha1 is not supported; choose from hmac-sha2-256-etm@openssh.com, hmac-sha2-512-etm@openssh.com", "ssh.macs[1]: hmac-sha2-256 is not supported"}},
		{"kex: [diffie-hellman-group14-sha1, ecdh-sha2-nistp256]", []string{"ssh.kex[0]: diffie-hellman-group14-sha1 is not supported; choose from mlkem768x25519-sha256, curve25519-sha256, curve25519-sha256@libssh.org", "ssh.kex[1]: ecdh-sha2-nistp256 is not supported"}},
		{"ciphers: [aes128-ctr, aes128-ctr]", []string{"ssh.ciphers[1]: aes128-ctr is listed twice"}},
	} {
		cfg, err := Parse([]byte("ssh:\n  host_keys: [/k]\n  " + tt.yaml + "\ndirectory:\n  file: /u\n"))
		if err != nil {
			t.Fatalf("%s: %v", tt.yaml, err)
		}
		err = cfg.Validate()
		if len(tt.want) == 0 {
			if err != nil {
				t.Errorf("%s: %v", tt.yaml, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: valid, want %q", tt.yaml, tt.want)
			continue
		}
		rest := err.Error()
		for _, w := range tt.want {
			j := strings.Index(rest, w)
			if j < 0 {
				t.Errorf("%s: %q does not contain %q (in order)", tt.yaml, err, w)
				break
			}
			rest = rest[j+len(w):]
		}
	}
}

// TestREADMEReference: the README's config reference
// (testdata/readme/reference.yaml) validates, and its algorithm lists are
// the defaults.
func TestREADMEReference(t *testing.T) {
	t.Parallel()
	cfg, _ := readmeExample(t, "reference.yaml")
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	for _, l := range []struct {
		key       string
		got, want []string
	}{{"kex", cfg.SSH.Kex, DefaultKex}, {"ciphers", cfg.SSH.Ciphers, DefaultCiphers}, {"macs", cfg.SSH.MACs, DefaultMACs}} {
		if strings.Join(l.got, ",") != strings.Join(l.want, ",") {
			t.Errorf("README ssh.%s %v, default %v", l.key, l.got, l.want)
		}
	}
}

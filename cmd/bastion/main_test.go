package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bastion-ssh/bastion/sshd"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	keys, err := sshd.EnsureHostKeys(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open_key")
	data, _ := os.ReadFile(keys[0])
	os.WriteFile(open, data, 0o644)
	garbage := filepath.Join(dir, "garbage_key")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	users := filepath.Join(dir, "users.yaml")
	os.WriteFile(users, []byte("users: []\n"), 0o600)

	tests := []struct {
		name     string
		yaml     string
		wantCode int
		wants    []string
	}{
		{"ok", "ssh:\n  host_keys: [" + keys[0] + "]\ndirectory:\n  file: " + users + "\n", 0, []string{"config ok"}},
		{"every problem", "ssh:\n  listen: nope\n  host_keys: [/missing/key, " + open + ", " + garbage + "]\nlimits:\n  max_startups: 0\ndirectory:\n  file: " + users + "\n", 1, []string{
			"ssh.listen:", "limits.max_startups:", "ssh.host_keys[0]: host key /missing/key: stat /missing/key: no such file",
			"ssh.host_keys[1]: host key " + open + ": permissions 0644 are too open",
			"ssh.host_keys[2]: host key " + garbage,
		}},
		{"unknown key", "ssh:\n  host_kyes: [x]\n", 1, []string{"field host_kyes not found"}},
		{"user CA and revoked keys", "ssh:\n  host_keys: [" + keys[0] + "]\n  trusted_user_ca_keys: [/missing/ca.pub, " + garbage + ", \"\"]\n  revoked_keys: " + garbage + "\ndirectory:\n  file: " + users + "\n", 1, []string{
			"ssh.trusted_user_ca_keys[0]: open /missing/ca.pub: no such file",
			"ssh.trusted_user_ca_keys[1]: " + garbage + ":1:",
			"ssh.trusted_user_ca_keys[2]: empty path",
			"ssh.revoked_keys: " + garbage + ": line 1: not a public key or SHA256 fingerprint",
		}},
		{"user CA ok", "ssh:\n  host_keys: [" + keys[0] + "]\n  trusted_user_ca_keys: [" + keys[0] + ".pub]\n  revoked_keys: " + keys[0] + ".pub\ndirectory:\n  file: " + users + "\n", 0, []string{"config ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(p, []byte(tt.yaml), 0o600)
			var out, errb bytes.Buffer
			code := run([]string{"check-config", "--config", p}, &out, &errb)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; out %q err %q", code, tt.wantCode, out.String(), errb.String())
			}
			for _, w := range tt.wants {
				if !strings.Contains(out.String(), w) {
					t.Errorf("missing %q in output:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Errorf("code %d, stderr %q", code, errb.String())
	}
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "bastion ") {
		t.Errorf("version: code %d, out %q", code, out.String())
	}
	errb.Reset()
	if code := run([]string{"serve"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--config FILE is required") {
		t.Errorf("serve without config: code %d, stderr %q", code, errb.String())
	}
}

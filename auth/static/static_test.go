package static

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/auth"
)

const (
	key1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8jwB9uoIIl4rKdHmoCK7kQPOkOnrCeg12i06y8eCq one"
	key2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPUXKPEPcNrtdnY9MT2iTCjQUO0lsnOcf8dShhSXRyVl two"
)

func TestLookup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kf := filepath.Join(dir, "authorized_keys")
	os.WriteFile(kf, []byte("# comment\n\n"+key1+"\nthis is not a key\n"+key2+"\n"+`tunnel="0" `+key2+"\n"), 0o600)
	var logs bytes.Buffer
	d, err := New(File{
		Users: []User{{Name: "alice", UID: 1000, GID: 1000, Home: "/home/alice", Shell: "/bin/sh",
			Groups: []string{"tools.mytool", "wheel"}, Keys: []string{"garbage"}, KeyFiles: []string{kf}}},
		Tools: []Tool{{Name: "mytool", UID: 5001, GID: 5001, Home: "/data/mytool"}},
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	u, err := d.LookupUser(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Keys) != 2 || !u.Maintains("mytool") || u.Maintains("wheel") {
		t.Fatalf("user %+v", u)
	}
	for _, want := range []string{"source=" + kf + ":4 ", "source=" + kf + ":6 ", "does not implement", `source="users file users[0].keys[0]"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not name %q:\n%s", want, logs.String())
		}
	}
	// Looked up again: the skipped lines are not logged again.
	n := strings.Count(logs.String(), "\n")
	if _, err := d.LookupUser(context.Background(), "alice"); err != nil || strings.Count(logs.String(), "\n") != n {
		t.Errorf("second lookup: %v; log:\n%s", err, logs.String())
	}
	if _, err := d.LookupUser(context.Background(), "bob"); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
	if a, err := d.LookupTool(context.Background(), "mytool"); err != nil || a.UID != 5001 {
		t.Errorf("tool: %+v %v", a, err)
	}
	// A key added later is seen without a restart.
	os.WriteFile(kf, []byte(key1+"\n"), 0o600)
	os.Chtimes(kf, timeAfter(t, kf), timeAfter(t, kf))
	u, _ = d.LookupUser(context.Background(), "alice")
	if len(u.Keys) != 1 {
		t.Errorf("after editing the key file: %d keys", len(u.Keys))
	}
}

func TestBadFile(t *testing.T) {
	t.Parallel()
	for _, f := range []File{
		{Users: []User{{Name: "x*", Home: "/"}}},
		{Users: []User{{Name: "alice"}}},
		{Tools: []Tool{{Name: ")("}}},
	} {
		if _, err := New(f, slog.Default()); err == nil {
			t.Errorf("accepted %+v", f)
		}
	}
	p := filepath.Join(t.TempDir(), "u.yaml")
	os.WriteFile(p, []byte("users:\n  - nmae: alice\n"), 0o600)
	if _, err := Load(p, slog.Default()); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Errorf("unknown key: %v", err)
	}
}

func timeAfter(t *testing.T, path string) (tm time.Time) {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.ModTime().Add(2 * time.Second)
}

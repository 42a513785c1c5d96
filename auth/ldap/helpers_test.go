package ldap

import (
	"bytes"
	"github.com/bastion-ssh/bastion/auth"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/bastion-ssh/bastion/config"
	"github.com/bastion-ssh/bastion/integration/slapd"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig is the default config for the seeded tree at urls, bound as
// the bastion's account, with short timeouts and no kill-switch file.
func testConfig(pwFile string, urls ...string) config.LDAP {
	c := config.Default().LDAP
	c.URLs = urls
	c.BaseDN = slapd.Base
	c.BindDN = slapd.BindDN
	c.BindPasswordFile = pwFile
	c.StartTLS = false
	c.KillSwitchFile = ""
	c.DialTimeout = 2 * time.Second
	c.Timeout = 3 * time.Second
	return c
}

// logs collects a Directory's log lines.
type logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mustContain fails unless the log has a line containing every part.
func (l *logs) mustContain(t testing.TB, parts ...string) {
	t.Helper()
	for _, line := range strings.Split(l.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return
		}
	}
	t.Errorf("no log line contains all of %q; log:\n%s", parts, l.String())
}

// newDirectory makes a Directory that is closed when the test ends and
// whose log is printed when the test fails.
func newDirectory(t testing.TB, cfg config.LDAP) (*Directory, *logs) {
	t.Helper()
	l := &logs{}
	d, err := New(cfg, slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		d.Close()
		if t.Failed() {
			t.Logf("directory log:\n%s", l.String())
		}
	})
	return d, l
}

func keyStrings(keys []auth.AuthorizedKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.Key))))
	}
	return out
}

func testKeys(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(slapd.PublicKey(n)))))
	}
	return out
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func addMemberUid(t testing.TB, admin *ldap.Conn, group, uid string) {
	t.Helper()
	req := ldap.NewModifyRequest(group, nil)
	req.Add("memberUid", []string{uid})
	if err := admin.Modify(req); err != nil {
		t.Fatalf("add memberUid %s to %s: %v", uid, group, err)
	}
}

func addPerson(t testing.TB, admin *ldap.Conn, uid string, uidNumber int) {
	t.Helper()
	req := ldap.NewAddRequest("uid="+uid+",ou=people,"+slapd.Base, nil)
	req.Attribute("objectClass", []string{"inetOrgPerson", "posixAccount", "ldapPublicKey"})
	req.Attribute("uid", []string{uid})
	req.Attribute("cn", []string{uid})
	req.Attribute("sn", []string{uid})
	req.Attribute("uidNumber", []string{strconv.Itoa(uidNumber)})
	req.Attribute("gidNumber", []string{"500"})
	req.Attribute("homeDirectory", []string{"/home/" + uid})
	req.Attribute("sshPublicKey", []string{slapd.AuthorizedKey(uid + "-1")})
	if err := admin.Add(req); err != nil {
		t.Fatalf("add %s: %v", uid, err)
	}
}

func ldapDel(dn string) *ldap.DelRequest { return ldap.NewDelRequest(dn, nil) }

func removeFile(t testing.TB, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

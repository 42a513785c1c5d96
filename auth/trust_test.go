package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type certSpec struct {
	principals []string
	after      time.Time
	before     time.Time
	crit       map[string]string
	ext        map[string]string
	serial     uint64
	id         string
	typ        uint32
}

func makeCert(t testing.TB, ca ssh.Signer, key ssh.PublicKey, s certSpec) *ssh.Certificate {
	t.Helper()
	if s.typ == 0 {
		s.typ = ssh.UserCert
	}
	if s.ext == nil {
		s.ext = map[string]string{"permit-pty": "", "permit-port-forwarding": ""}
	}
	c := &ssh.Certificate{
		Key: key, Serial: s.serial, CertType: s.typ, KeyId: s.id, ValidPrincipals: s.principals,
		ValidAfter: uint64(s.after.Unix()), ValidBefore: uint64(s.before.Unix()),
		Permissions: ssh.Permissions{CriticalOptions: s.crit, Extensions: s.ext},
	}
	if s.before.IsZero() {
		c.ValidBefore = ssh.CertTimeInfinity
	}
	if s.after.IsZero() {
		c.ValidAfter = 0
	}
	if err := c.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAuthenticatePlainKeys(t *testing.T) {
	t.Parallel()
	k := newSigner(t).PublicKey()
	other := newSigner(t).PublicKey()
	now := time.Now()
	src := netip.MustParseAddr("10.1.2.3")
	line := func(opts string) AuthorizedKey {
		ak, err := ParseAuthorizedKey([]byte(strings.TrimSpace(opts+" "+string(ssh.MarshalAuthorizedKey(k)))), "test:1")
		if err != nil {
			t.Fatal(err)
		}
		return ak
	}
	alice := Login{User: "alice"}
	tests := []struct {
		name    string
		keys    []AuthorizedKey
		key     ssh.PublicKey
		login   Login
		trust   *Trust
		wantErr string
		check   func(Restrictions) bool
	}{
		{name: "plain", keys: []AuthorizedKey{line("")}, key: k, login: alice},
		{name: "tool login same key", keys: []AuthorizedKey{line("")}, key: k, login: Login{User: "alice", Tool: "t"}},
		{name: "wrong key", keys: []AuthorizedKey{line("")}, key: other, login: alice, wantErr: "key not authorized"},
		{name: "other person", keys: []AuthorizedKey{line("")}, key: k, login: Login{User: "bob"}, wantErr: "not person"},
		{name: "from allows", keys: []AuthorizedKey{line(`from="10.0.0.0/8"`)}, key: k, login: alice},
		{name: "from refuses", keys: []AuthorizedKey{line(`from="192.168.0.0/16"`)}, key: k, login: alice, wantErr: "not valid from 10.1.2.3"},
		{name: "from negated", keys: []AuthorizedKey{line(`from="10.0.0.0/8,!10.1.2.3"`)}, key: k, login: alice, wantErr: "not valid from"},
		{name: "expired", keys: []AuthorizedKey{line(`expiry-time="20200101Z"`)}, key: k, login: alice, wantErr: "expired"},
		{name: "not expired", keys: []AuthorizedKey{line(`expiry-time="20991231Z"`)}, key: k, login: alice},
		{name: "second line wins after a refused first", keys: []AuthorizedKey{line(`from="192.168.0.0/16"`), line(`restrict`)}, key: k, login: alice,
			check: func(r Restrictions) bool { return r.NoPTY }},
		{name: "cert-authority line is not a login key", keys: []AuthorizedKey{line(`cert-authority`)}, key: k, login: alice, wantErr: "key not authorized"},
		{name: "restrictions carried", keys: []AuthorizedKey{line(`command="echo x",no-pty,permitopen="h:1"`)}, key: k, login: alice,
			check: func(r Restrictions) bool {
				return r.HasForceCommand && r.ForceCommand == "echo x" && r.NoPTY && !r.NoPortForwarding && slices.Equal(r.PermitOpen, []string{"h:1"})
			}},
		{name: "revoked", keys: []AuthorizedKey{line("")}, key: k, login: alice, trust: &Trust{Revoked: revokedKeys(t, k)}, wantErr: "revoked"},
	}
	for _, tt := range tests {
		u := &User{Account: Account{Name: "alice"}, Keys: tt.keys}
		g, err := tt.trust.Authenticate(u, tt.login, tt.key, src, now)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if g.Source != "test:1" {
			t.Errorf("%s: source %q", tt.name, g.Source)
		}
		if tt.check != nil && !tt.check(g.Restrictions) {
			t.Errorf("%s: restrictions %+v", tt.name, g.Restrictions)
		}
	}
}

func revokedKeys(t testing.TB, keys ...ssh.PublicKey) *Revocations {
	var b strings.Builder
	for _, k := range keys {
		b.Write(ssh.MarshalAuthorizedKey(k))
	}
	r, err := ParseRevocations([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAuthenticateCertificates(t *testing.T) {
	t.Parallel()
	ca := newSigner(t)
	otherCA := newSigner(t)
	user := newSigner(t).PublicKey()
	now := time.Now()
	src := netip.MustParseAddr("10.1.2.3")
	trust := &Trust{CAs: []AuthorizedKey{{Key: ca.PublicKey(), Source: "ca.pub:1"}}}
	alice := Login{User: "alice"}
	caLine := func(opts string, k ssh.PublicKey) AuthorizedKey {
		ak, err := ParseAuthorizedKey([]byte(opts+" "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))), "keys:7")
		if err != nil {
			t.Fatal(err)
		}
		return ak
	}
	tests := []struct {
		name    string
		cert    certSpec
		signer  ssh.Signer
		keys    []AuthorizedKey
		login   Login
		trust   *Trust
		wantErr string
		check   func(*Grant) bool
	}{
		{name: "valid", cert: certSpec{principals: []string{"alice"}, id: "alice@corp", serial: 7}, login: alice,
			check: func(g *Grant) bool {
				return g.Cert.KeyID == "alice@corp" && g.Cert.Serial == 7 && !g.Restrictions.NoPTY && g.Restrictions.NoAgentForwarding
			}},
		{name: "serves alice+tool", cert: certSpec{principals: []string{"alice"}}, login: Login{User: "alice", Tool: "mytool"}},
		{name: "wrong principal", cert: certSpec{principals: []string{"bob"}}, login: alice, wantErr: "not for alice"},
		{name: "expired", cert: certSpec{principals: []string{"alice"}, before: now.Add(-time.Hour)}, login: alice, wantErr: "expired"},
		{name: "not yet valid", cert: certSpec{principals: []string{"alice"}, after: now.Add(time.Hour)}, login: alice, wantErr: "not valid yet"},
		{name: "host cert", cert: certSpec{principals: []string{"alice"}, typ: ssh.HostCert}, login: alice, wantErr: "not a user certificate"},
		{name: "untrusted CA", cert: certSpec{principals: []string{"alice"}}, signer: otherCA, login: alice, wantErr: "not trusted"},
		{name: "unknown critical option", cert: certSpec{principals: []string{"alice"}, crit: map[string]string{"frobnicate": "x"}}, login: alice, wantErr: `"frobnicate" is not supported`},
		{name: "verify-required refused", cert: certSpec{principals: []string{"alice"}, crit: map[string]string{"verify-required": ""}}, login: alice, wantErr: "not supported"},
		{name: "force-command", cert: certSpec{principals: []string{"alice"}, crit: map[string]string{"force-command": "uptime"}}, login: alice,
			check: func(g *Grant) bool { return g.Restrictions.HasForceCommand && g.Restrictions.ForceCommand == "uptime" }},
		{name: "source-address allows", cert: certSpec{principals: []string{"alice"}, crit: map[string]string{"source-address": "10.0.0.0/8"}}, login: alice},
		{name: "source-address refuses", cert: certSpec{principals: []string{"alice"}, crit: map[string]string{"source-address": "192.168.0.0/16"}}, login: alice, wantErr: "source-address"},
		{name: "no extensions: no pty, no forwarding", cert: certSpec{principals: []string{"alice"}, ext: map[string]string{}}, login: alice,
			check: func(g *Grant) bool { return g.Restrictions.NoPTY && g.Restrictions.NoPortForwarding }},
		{name: "CA revoked", cert: certSpec{principals: []string{"alice"}}, login: alice,
			trust: &Trust{CAs: trust.CAs, Revoked: revokedKeys(t, ca.PublicKey())}, wantErr: "revoked"},
		{name: "cert's key revoked", cert: certSpec{principals: []string{"alice"}}, login: alice,
			trust: &Trust{CAs: trust.CAs, Revoked: revokedKeys(t, user)}, wantErr: "revoked"},
		{name: "cert-authority line", cert: certSpec{principals: []string{"alice"}}, signer: otherCA, trust: &Trust{},
			keys: []AuthorizedKey{caLine("cert-authority,no-pty", otherCA.PublicKey())}, login: alice,
			check: func(g *Grant) bool { return g.Source == "keys:7" && g.Restrictions.NoPTY }},
		{name: "cert-authority principals=", cert: certSpec{principals: []string{"backup"}}, signer: otherCA, trust: &Trust{},
			keys: []AuthorizedKey{caLine(`cert-authority,principals="backup,ops"`, otherCA.PublicKey())}, login: alice},
		{name: "cert-authority principals= refuses", cert: certSpec{principals: []string{"alice"}}, signer: otherCA, trust: &Trust{},
			keys: []AuthorizedKey{caLine(`cert-authority,principals="backup"`, otherCA.PublicKey())}, login: alice, wantErr: "principals list"},
		{name: "cert-authority from=", cert: certSpec{principals: []string{"alice"}}, signer: otherCA, trust: &Trust{},
			keys: []AuthorizedKey{caLine(`cert-authority,from="192.168.0.0/16"`, otherCA.PublicKey())}, login: alice, wantErr: "not valid from"},
		{name: "forced commands differ", cert: certSpec{principals: []string{"alice"}, crit: map[string]string{"force-command": "a"}}, signer: otherCA, trust: &Trust{},
			keys: []AuthorizedKey{caLine(`cert-authority,command="b"`, otherCA.PublicKey())}, login: alice, wantErr: "differ"},
		{name: "plain key line does not make its key a CA", cert: certSpec{principals: []string{"alice"}}, signer: otherCA, trust: &Trust{},
			keys: []AuthorizedKey{caLine(``, otherCA.PublicKey())}, login: alice, wantErr: "not trusted"},
	}
	for _, tt := range tests {
		signer := tt.signer
		if signer == nil {
			signer = ca
		}
		tr := tt.trust
		if tr == nil {
			tr = trust
		}
		c := makeCert(t, signer, user, tt.cert)
		u := &User{Account: Account{Name: "alice"}, Keys: tt.keys}
		g, err := tr.Authenticate(u, tt.login, c, src, now)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if g.Cert == nil || (tt.check != nil && !tt.check(g)) {
			t.Errorf("%s: grant %+v cert %+v", tt.name, g.Restrictions, g.Cert)
		}
	}
}

func TestCertPrincipal(t *testing.T) {
	t.Parallel()
	alice := Login{User: "alice"}
	for _, tt := range []struct {
		ps, auth []string
		login    Login
		want     string
	}{
		{[]string{"alice"}, nil, alice, "alice"},
		{[]string{"bob", "alice"}, nil, Login{User: "alice", Tool: "t"}, "alice"},
		{[]string{"alice+t"}, nil, Login{User: "alice", Tool: "t"}, ""},
		{[]string{"Alice"}, nil, alice, ""},
		{nil, nil, alice, ""},
		{[]string{}, []string{"alice"}, alice, ""},
		{[]string{"ops"}, []string{"backup", "ops"}, alice, "ops"},
		{[]string{""}, []string{""}, alice, ""},
	} {
		got, err := CertPrincipal(tt.ps, tt.login, tt.auth)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("CertPrincipal(%q, %+v, %q) = %q, %v; want %q", tt.ps, tt.login, tt.auth, got, err, tt.want)
		}
	}
}

// TestKRLFromSSHKeygen revokes keys and certificates with the real
// ssh-keygen -k and checks each against the parsed KRL.
func TestKRLFromSSHKeygen(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed")
	}
	t.Parallel()
	dir := t.TempDir()
	keygen := func(args ...string) {
		t.Helper()
		out, err := exec.Command("ssh-keygen", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen %v: %v\n%s", args, err, out)
		}
	}
	key := func(name string) ssh.PublicKey {
		keygen("-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, name))
		b, _ := os.ReadFile(filepath.Join(dir, name+".pub"))
		k, _, _, _, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	readCert := func(name string) *ssh.Certificate {
		b, _ := os.ReadFile(filepath.Join(dir, name+"-cert.pub"))
		k, _, _, _, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			t.Fatal(err)
		}
		return k.(*ssh.Certificate)
	}
	key("ca")
	plainRevoked, plainOK := key("revoked"), key("ok")
	key("u1")
	key("u2")
	key("u3")
	keygen("-q", "-s", filepath.Join(dir, "ca"), "-I", "u1", "-n", "alice", "-z", "5", filepath.Join(dir, "u1.pub"))
	keygen("-q", "-s", filepath.Join(dir, "ca"), "-I", "u2", "-n", "alice", "-z", "6", filepath.Join(dir, "u2.pub"))
	keygen("-q", "-s", filepath.Join(dir, "ca"), "-I", "bad-id", "-n", "alice", "-z", "0", filepath.Join(dir, "u3.pub"))
	spec := filepath.Join(dir, "spec")
	os.WriteFile(spec, []byte("serial: 100-200\nid: someone\n"), 0o600)
	krl := filepath.Join(dir, "krl")
	// Plain key and certificate u1 (by serial) and u3 (serial 0: by key ID).
	keygen("-k", "-f", krl, filepath.Join(dir, "revoked.pub"), filepath.Join(dir, "u1-cert.pub"), filepath.Join(dir, "u3-cert.pub"))
	keygen("-k", "-u", "-s", filepath.Join(dir, "ca.pub"), "-f", krl, spec)
	r, err := LoadRevocations(krl)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		key     ssh.PublicKey
		revoked bool
	}{
		{"revoked plain key", plainRevoked, true},
		{"other plain key", plainOK, false},
		{"cert serial 5", readCert("u1"), true},
		{"cert serial 6", readCert("u2"), false},
		{"cert serial 0 by key ID", readCert("u3"), true},
	} {
		if err := r.Revoked(tt.key); (err != nil) != tt.revoked {
			t.Errorf("%s: Revoked = %v, want revoked %v", tt.name, err, tt.revoked)
		}
	}
	// A serial inside the range of the spec file.
	ca, err := os.ReadFile(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	caSigner, err := ssh.ParsePrivateKey(ca)
	if err != nil {
		t.Fatal(err)
	}
	in := makeCert(t, caSigner, plainOK, certSpec{principals: []string{"alice"}, serial: 150})
	out := makeCert(t, caSigner, plainOK, certSpec{principals: []string{"alice"}, serial: 201})
	byID := makeCert(t, caSigner, plainOK, certSpec{principals: []string{"alice"}, serial: 300, id: "someone"})
	if r.Revoked(in) == nil || r.Revoked(out) != nil || r.Revoked(byID) == nil {
		t.Errorf("range/ID: 150 %v, 201 %v, id %v", r.Revoked(in), r.Revoked(out), r.Revoked(byID))
	}
	// A KRL that lists plain keys by SHA256 hash (ssh-keygen -k with a
	// "hash:" spec) and a text list with a fingerprint.
	spec2 := filepath.Join(dir, "spec2")
	os.WriteFile(spec2, []byte("hash: "+ssh.FingerprintSHA256(plainOK)+"\n"), 0o600)
	krl2 := filepath.Join(dir, "krl2")
	keygen("-k", "-f", krl2, spec2)
	r2, err := LoadRevocations(krl2)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Revoked(plainOK) == nil || r2.Revoked(plainRevoked) != nil {
		t.Errorf("sha256 KRL: ok %v, other %v", r2.Revoked(plainOK), r2.Revoked(plainRevoked))
	}
	r3, err := ParseRevocations([]byte("# list\n" + ssh.FingerprintSHA256(plainOK) + "\n"))
	if err != nil || r3.Revoked(plainOK) == nil || r3.Revoked(plainRevoked) != nil {
		t.Errorf("fingerprint list: %v", err)
	}
	if _, err := ParseRevocations([]byte("SSHKRL\n\x00\x00\x00")); err == nil {
		t.Error("truncated KRL accepted")
	}
	if _, err := ParseRevocations([]byte("not a key\n")); err == nil {
		t.Error("garbage list accepted")
	}
}

// FuzzCertPrincipal checks the certificate-to-account mapping: an
// accepted login always has a valid user name, the principal that
// allowed it is the certificate's, and without a principals= list it is
// exactly the person's name (never a prefix, never the tool).
func FuzzCertPrincipal(f *testing.F) {
	f.Add("alice", "alice", "")
	f.Add("alice+mytool", "alice", "")
	f.Add("alice", "alice,bob", "")
	f.Add("alice", "backup", "backup,ops")
	f.Add("alicex", "alice", "")
	f.Add("alice+tool", "alice+tool", "")
	f.Add("", "", "")
	f.Add("bob", "alice\x00bob", "")
	f.Fuzz(func(t *testing.T, loginName, principals, authorized string) {
		login, err := ParseLogin(loginName)
		if err != nil {
			return
		}
		var ps, auth []string
		if principals != "" {
			ps = strings.Split(principals, ",")
		}
		if authorized != "" {
			auth = strings.Split(authorized, ",")
		}
		p, err := CertPrincipal(ps, login, auth)
		if err != nil {
			return
		}
		if ValidName(login.User) != nil {
			t.Fatalf("accepted invalid user %q", login.User)
		}
		if !slices.Contains(ps, p) {
			t.Fatalf("principal %q is not the certificate's %q", p, ps)
		}
		if auth == nil && p != login.User {
			t.Fatalf("principal %q allowed login %q", p, loginName)
		}
		if auth != nil && !slices.Contains(auth, p) {
			t.Fatalf("principal %q not in principals= %q", p, auth)
		}
	})
}

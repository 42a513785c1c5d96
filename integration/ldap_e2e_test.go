package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/integration/slapd"
)

// ldapWorld is a slapd seeded with the Toolforge-like tree (homes moved
// under a temporary directory and owned by their accounts) and a `bastion
// serve` that takes its users from it over StartTLS.
type ldapWorld struct {
	slapd *slapd.Server
	bast  *server
	homes string // people's homes are homes/NAME, tools' homes/project/TOOL
	keys  string // directory of the test users' private keys
	block string // the kill-switch file
}

// ldapAccounts are the seeded accounts whose homes the test creates.
var ldapAccounts = map[string]int{"alice": 5001, "bob": 5002, "carol": 5003, "project/mytool": 52001, "project/othertool": 52002}

func startLDAPWorld(t *testing.T) *ldapWorld { return startLDAPWorldWith(t, "") }

// startLDAPWorldWith is startLDAPWorld with more keys of the ldap section
// (YAML lines indented by two spaces).
func startLDAPWorldWith(t *testing.T, ldapKeys string) *ldapWorld {
	t.Helper()
	needTools(t, "ssh", "scp", "ssh-keygen")
	slapd.Require(t)
	w := &ldapWorld{homes: t.TempDir(), keys: t.TempDir()}
	// The accounts must reach their homes through the test's directories.
	for _, d := range []string{filepath.Dir(w.homes), w.homes, filepath.Join(w.homes, "project")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, id := range ldapAccounts {
		home := filepath.Join(w.homes, name)
		if err := os.Mkdir(home, 0o755); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			if err := os.Chown(home, id, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	seed := slapd.DefaultSeed(t)
	seed = strings.ReplaceAll(seed, "homeDirectory: /home/", "homeDirectory: "+w.homes+"/")
	seed = strings.ReplaceAll(seed, "homeDirectory: /data/project/", "homeDirectory: "+w.homes+"/project/")
	seed = strings.ReplaceAll(seed, "loginShell: /bin/zsh", "loginShell: /bin/sh") // zsh is not installed here
	ca := slapd.NewCA(t, "e2e CA")
	w.slapd = slapd.Start(t, slapd.Options{LDIF: seed, TLS: ca})

	dir := t.TempDir()
	hostKey := userKey(t, dir, "ssh_host_ed25519_key")
	ca.WriteCert(t, filepath.Join(dir, "ldap-ca.pem"))
	w.block = filepath.Join(dir, "block-ldap-key-lookup")
	cfg := fmt.Sprintf(`ssh:
  listen: 127.0.0.1:0
  host_keys: [%s]
directory:
  type: ldap
ldap:
  urls: [%q]
  ca_file: ldap-ca.pem
  bind_dn: cn=bastion,ou=apps,{base}
  bind_password_file: %s
  base_dn: %s
  kill_switch_file: block-ldap-key-lookup
%s
limits:
  penalties:
    exempt: [127.0.0.1]   # the table below fails logins on purpose
ops:
  listen: 127.0.0.1:0
audit:
  output: audit.log
log:
  format: text
  level: debug
`, hostKey, w.slapd.URL, w.slapd.PasswordFile, slapd.Base, ldapKeys)
	cfgPath := filepath.Join(dir, "bastion.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	passwd, group := w.nssFiles(t, dir)
	w.bast = startServe(t, dir, cfgPath, passwd, group)
	return w
}

// nssFiles writes copies of /etc/passwd and /etc/group with the seeded
// accounts added. Running as root, the local backend switches to the
// accounts' uids, and OpenSSH's scp and sftp-server refuse to run for a
// uid that has no passwd entry ("No user found for uid 52001"); on a real
// bastion host NSS answers from LDAP (sssd, nslcd). The test shows these
// files to bastion alone, bind-mounted in a private mount namespace.
func (w *ldapWorld) nssFiles(t *testing.T, dir string) (passwd, group string) {
	t.Helper()
	pw, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	gr, err := os.ReadFile("/etc/group")
	if err != nil {
		t.Fatal(err)
	}
	h := w.homes
	pw = append(pw, fmt.Sprintf(`alice:x:5001:500::%[1]s/alice:/bin/bash
bob:x:5002:500::%[1]s/bob:/bin/sh
carol:x:5003:500::%[1]s/carol:/bin/sh
tools.mytool:x:52001:52001::%[1]s/project/mytool:/bin/bash
tools.othertool:x:52002:52002::%[1]s/project/othertool:/bin/bash
`, h)...)
	gr = append(gr, `ldapusers:x:500:
project-tools:x:50380:alice,bob,carol
tools.mytool:x:52001:alice,bob
tools.othertool:x:52002:bob
`...)
	passwd, group = filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	for p, data := range map[string][]byte{passwd: pw, group: gr} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return passwd, group
}

var listeningRE = regexp.MustCompile(`msg=listening address=127\.0\.0\.1:(\d+)`)

// startServe runs `bastion serve --config cfgPath` and waits for its
// "listening" log line. As root, bastion runs in a private mount namespace
// where passwd and group are bind-mounted over /etc/passwd and /etc/group.
func startServe(t *testing.T, dir, cfgPath, passwd, group string) *server {
	t.Helper()
	s := &server{t: t, dir: dir, user: "alice", done: make(chan struct{})}
	args := []string{bastionBinary(t), "serve", "--config", cfgPath}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Fatalf("running as root, the LDAP tests need unshare (util-linux) to give bastion the LDAP accounts in /etc/passwd: %v", err)
		}
		script := `pw=$1 gr=$2; shift 2; mount --bind "$pw" /etc/passwd && mount --bind "$gr" /etc/group && exec "$@"`
		args = append([]string{"unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", passwd, group}, args...)
	}
	s.cmd = exec.Command(args[0], args[1:]...)
	s.cmd.Stderr = &lockedWriter{mu: &s.mu, w: &s.logBuf}
	s.cmd.Stdout = &lockedWriter{mu: &s.mu, w: &s.stdout}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.exit = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(s.logs()); m != nil {
			s.port = m[1]
			s.addr = "127.0.0.1:" + s.port
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("bastion serve exited before listening: %v\nlog:\n%s", s.exit, s.logs())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("bastion serve not listening after 20s\nlog:\n%s", s.logs())
		}
	}
}

// key writes the private half of test key name and returns its path.
func (w *ldapWorld) key(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(w.keys, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return slapd.WritePrivateKey(t, w.keys, name)
}

// ldapCase is one ssh run in TestLDAPLogin.
type ldapCase struct {
	name     string
	login    string
	key      string // test key name (slapd.Key)
	args     []string
	stdin    string
	wantCode int
	wantOut  string // exact stdout, when set
	wantErr  string // in stderr, when set
}

func TestLDAPLogin(t *testing.T) {
	t.Parallel()
	w := startLDAPWorld(t)
	root := os.Geteuid() == 0
	tests := []ldapCase{
		{name: "alice's key", login: "alice", key: "alice-1", args: []string{"--", `echo "$USER $HOME"`},
			wantOut: "alice " + w.homes + "/alice\n"},
		{name: "bob's first key", login: "bob", key: "bob-1", args: []string{"--", "echo $USER"}, wantOut: "bob\n"},
		{name: "bob's second key", login: "bob", key: "bob-2", args: []string{"--", "echo $USER"}, wantOut: "bob\n"},
		{name: "carol's good key among bad ones", login: "carol", key: "carol-1", args: []string{"--", "echo $USER"}, wantOut: "carol\n"},
		{name: "carol's key from a multi-line value", login: "carol", key: "carol-2", args: []string{"--", "echo $USER"}, wantOut: "carol\n"},
		{name: "wrong key", login: "alice", key: "bob-1", args: []string{"--", "true"}, wantCode: 255, wantErr: "Permission denied"},
		{name: "disabled user", login: "dave", key: "dave-1", args: []string{"--", "true"}, wantCode: 255, wantErr: "Permission denied"},
		{name: "entry without uidNumber", login: "erin", key: "erin-1", args: []string{"--", "true"}, wantCode: 255, wantErr: "Permission denied"},
		{name: "unknown user", login: "mallory", key: "alice-1", args: []string{"--", "true"}, wantCode: 255, wantErr: "Permission denied"},
		// (ssh itself refuses names with parentheses; auth/ldap's tests cover them.)
		{name: "wildcard name", login: "*", key: "alice-1", args: []string{"--", "true"}, wantCode: 255, wantErr: "Permission denied"},
		{name: "wildcard in the name", login: "al*", key: "alice-1", args: []string{"--", "true"}, wantCode: 255, wantErr: "Permission denied"},
		{name: "wildcard tool", login: "alice+*", key: "alice-1", args: []string{"--", "true"}, wantCode: 255, wantErr: "Permission denied"},
		{name: "become a maintained tool", login: "alice", key: "alice-1", args: []string{"--", `become mytool echo "$USER $HOME"`},
			wantOut: "tools.mytool " + w.homes + "/project/mytool\n"},
		{name: "become, shell on stdin", login: "bob", key: "bob-2", args: []string{"--", "become othertool"}, stdin: "echo $USER\n",
			wantOut: "tools.othertool\n"},
		{name: "become with a pty", login: "alice", key: "alice-1", args: []string{"-tt", "--", "become mytool"}, stdin: "echo I am $USER; exit 0\n",
			wantErr: ""},
		{name: "become denied", login: "alice", key: "alice-1", args: []string{"--", "become othertool id"},
			wantCode: 1, wantErr: "alice is not a maintainer of tool othertool"},
		{name: "become denied, other user", login: "carol", key: "carol-1", args: []string{"-tt", "--", "become mytool"},
			wantCode: 1, wantErr: "carol is not a maintainer of tool mytool"},
		{name: "become an unknown tool", login: "alice", key: "alice-1", args: []string{"--", "become nosuchtool"},
			wantCode: 1, wantErr: "nosuchtool: no such tool"},
		{name: "become a tool group without account", login: "alice", key: "alice-1", args: []string{"--", "become ghosttool"},
			wantCode: 1, wantErr: "ghosttool: no such tool"},
		{name: "user+tool login", login: "alice+mytool", key: "alice-1", args: []string{"--", `echo "$USER $HOME"; pwd`},
			wantOut: "tools.mytool " + w.homes + "/project/mytool\n" + w.homes + "/project/mytool\n"},
		{name: "user+tool login with the other form", login: "bob+mytool", key: "bob-1", args: []string{"--", "echo $USER"},
			wantOut: "tools.mytool\n"},
		// Tool logins are decided at authentication: a tool the person
		// does not maintain, or that does not exist, is refused like a
		// wrong key.
		{name: "user+tool login, not a maintainer", login: "carol+mytool", key: "carol-1", args: []string{"--", "echo $USER"},
			wantCode: 255, wantErr: "Permission denied"},
		{name: "user+tool login, another's tool", login: "alice+othertool", key: "alice-1", args: []string{"--", "echo $USER"},
			wantCode: 255, wantErr: "Permission denied"},
		{name: "user+tool login, no such tool", login: "alice+nosuchtool", key: "alice-1", args: []string{"--", "echo $USER"},
			wantCode: 255, wantErr: "Permission denied"},
		{name: "user+tool login, tool group without account", login: "alice+ghosttool", key: "alice-1", args: []string{"--", "echo $USER"},
			wantCode: 255, wantErr: "Permission denied"},
		{name: "user+tool login with a wrong key", login: "alice+mytool", key: "bob-1", args: []string{"--", "true"},
			wantCode: 255, wantErr: "Permission denied"},
		// sshPublicKey values carry authorized_keys options, enforced as
		// for a file; an option bastion does not implement makes the key
		// unusable.
		{name: "forced command from an LDAP key", login: "bob", key: "bob-3", args: []string{"--", "id -u"},
			wantOut: "ldap-forced [id -u]\n"},
		{name: "forced command from an LDAP key replaces become", login: "bob", key: "bob-3", args: []string{"--", "become mytool id"},
			wantOut: "ldap-forced [become mytool id]\n"},
		{name: "no-port-forwarding from an LDAP key", login: "bob", key: "bob-3", args: []string{"-o", "LogLevel=INFO", "-W", "127.0.0.1:9"},
			wantCode: 255, wantErr: "administratively prohibited"},
		{name: "LDAP key with an unsupported option", login: "bob", key: "bob-4", args: []string{"--", "true"},
			wantCode: 255, wantErr: "Permission denied"},
	}
	if root {
		tests = append(tests,
			ldapCase{name: "runs as alice's uid and groups", login: "alice", key: "alice-1", args: []string{"--", "id -u; id -g; id -G"},
				wantOut: "5001\n500\n500 50380 52001\n"},
			ldapCase{name: "become runs as the tool's uid", login: "bob", key: "bob-1", args: []string{"--", "become mytool id -u; id -g"},
				wantOut: "52001\n52001\n"},
		)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := w.bast.runAs(t, w.key(t, tt.key), tt.login, tt.stdin, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stdout %q, stderr %q)", code, tt.wantCode, out, errOut)
			}
			if tt.wantOut != "" && out != tt.wantOut {
				t.Errorf("stdout = %q, want %q", out, tt.wantOut)
			}
			if tt.wantErr != "" && !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr = %q, want it to contain %q", errOut, tt.wantErr)
			}
			if tt.name == "become with a pty" && !strings.Contains(out, "I am tools.mytool") {
				t.Errorf("stdout = %q, want the tool's shell", out)
			}
		})
	}
	if t.Failed() {
		t.Logf("bastion log:\n%s", w.bast.logs())
	}
}

// scp and sftp into a tool account with alice+mytool.
func TestLDAPToolFileTransfer(t *testing.T) {
	t.Parallel()
	w := startLDAPWorld(t)
	key := w.key(t, "alice-1")
	src := filepath.Join(t.TempDir(), "report.txt")
	if err := os.WriteFile(src, []byte("hello tool\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(w.homes, "project", "mytool")
	for _, mode := range []struct {
		name  string
		flags []string
		dest  string
	}{
		{"scp over sftp", nil, "report.txt"},
		{"scp, legacy protocol", []string{"-O"}, "report-legacy.txt"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			args := append(append([]string{}, mode.flags...), w.bast.sshOptsKey(key)...)
			args = append(args, "-P", w.bast.port, src, "alice+mytool@127.0.0.1:"+mode.dest)
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			if out, err := exec.CommandContext(ctx, "scp", args...).CombinedOutput(); err != nil {
				t.Fatalf("scp: %v\n%s\nbastion log:\n%s", err, out, w.bast.logs())
			}
			dst := filepath.Join(home, mode.dest)
			data, err := os.ReadFile(dst)
			if err != nil || string(data) != "hello tool\n" {
				t.Fatalf("file in the tool's home: %q, %v", data, err)
			}
			if os.Geteuid() == 0 {
				st, _ := os.Stat(dst)
				if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 52001 {
					t.Errorf("the file belongs to uid %d, want the tool's 52001", uid)
				}
			}
		})
	}
	t.Run("sftp", func(t *testing.T) {
		needTools(t, "sftp")
		args := append(w.bast.sshOptsKey(key), "-P", w.bast.port, "-b", "-", "alice+mytool@127.0.0.1")
		cmd := exec.Command("sftp", args...)
		cmd.Stdin = strings.NewReader("put " + src + " via-sftp.txt\npwd\n")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("sftp: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), home) {
			t.Errorf("sftp pwd: %q, want the tool's home %s", out.String(), home)
		}
		if _, err := os.Stat(filepath.Join(home, "via-sftp.txt")); err != nil {
			t.Error(err)
		}
	})
	t.Run("carol cannot copy into mytool", func(t *testing.T) {
		args := append(w.bast.sshOptsKey(w.key(t, "carol-1")), "-P", w.bast.port, src, "carol+mytool@127.0.0.1:carol.txt")
		out, err := exec.Command("scp", args...).CombinedOutput()
		if err == nil {
			t.Fatalf("scp as a non-maintainer succeeded: %s", out)
		}
		if _, err := os.Stat(filepath.Join(home, "carol.txt")); err == nil {
			t.Error("the file was written")
		}
	})
}

// The kill-switch file refuses every LDAP login with a clear message, and
// logins come back when it goes.
func TestLDAPKillSwitch(t *testing.T) {
	t.Parallel()
	w := startLDAPWorld(t)
	key := w.key(t, "alice-1")
	if out, errOut, code := w.bast.runAs(t, key, "alice", "", "--", "echo ok"); code != 0 || out != "ok\n" {
		t.Fatalf("before the switch: %q %q %d", out, errOut, code)
	}
	if err := os.WriteFile(w.block, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := w.bast.runAs(t, key, "alice", "", "-o", "LogLevel=INFO", "--", "echo ok")
	if code != 255 || out != "" {
		t.Errorf("with the switch: stdout %q, exit %d; want refused", out, code)
	}
	if !strings.Contains(errOut, "logins are temporarily disabled") {
		t.Errorf("with the switch, the user reads %q", errOut)
	}
	if err := os.Remove(w.block); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := w.bast.runAs(t, key, "alice", "", "--", "echo ok"); code != 0 || out != "ok\n" {
		t.Errorf("after the switch: %q %q %d", out, errOut, code)
	}
}

// When slapd dies, logins of users seen before go on (stale cache); others
// read "directory unavailable, try again".
func TestLDAPServerDown(t *testing.T) {
	t.Parallel()
	w := startLDAPWorld(t)
	if out, errOut, code := w.bast.runAs(t, w.key(t, "alice-1"), "alice", "", "--", "echo ok"); code != 0 || out != "ok\n" {
		t.Fatalf("slapd up: %q %q %d", out, errOut, code)
	}
	w.slapd.Kill()
	if out, errOut, code := w.bast.runAs(t, w.key(t, "alice-1"), "alice", "", "--", "echo ok"); code != 0 || out != "ok\n" {
		t.Errorf("slapd down, alice cached: %q %q %d", out, errOut, code)
	}
	_, errOut, code := w.bast.runAs(t, w.key(t, "bob-1"), "bob", "", "-o", "LogLevel=INFO", "--", "echo ok")
	if code != 255 || !strings.Contains(errOut, "directory unavailable, try again") {
		t.Errorf("slapd down, bob never seen: exit %d, stderr %q", code, errOut)
	}
}

// Issue 15: slapd hung by SIGSTOP (it accepts connections, never answers).
// alice, cached but expired, logs in with the stale answer within a couple
// of seconds; bob, never seen, reads "directory unavailable, try again"
// well within the login's 10 s, and so does everybody at once: eight
// logins in parallel, none waiting the whole budget.
func TestLDAPServerHung(t *testing.T) {
	t.Parallel()
	w := startLDAPWorldWith(t, "  cache_ttl: 1s")
	if out, errOut, code := w.bast.runAs(t, w.key(t, "alice-1"), "alice", "", "--", "echo ok"); code != 0 || out != "ok\n" {
		t.Fatalf("slapd up: %q %q %d", out, errOut, code)
	}
	time.Sleep(1500 * time.Millisecond) // alice's answer expired
	w.slapd.Pause()
	defer w.slapd.Resume()

	type result struct {
		who     string
		out, se string
		code    int
		took    time.Duration
	}
	res := make(chan result, 8)
	for i := range 8 {
		who, key := "alice", "alice-1"
		if i%2 == 1 {
			who, key = "bob", "bob-1"
		}
		go func() {
			t0 := time.Now()
			out, se, code := w.bast.runAs(t, w.key(t, key), who, "", "-o", "LogLevel=INFO", "--", "echo ok")
			res <- result{who, out, se, code, time.Since(t0)}
		}()
	}
	for range 8 {
		r := <-res
		switch {
		case r.who == "alice" && (r.code != 0 || r.out != "ok\n" || r.took > 5*time.Second):
			t.Errorf("slapd hung, alice cached: exit %d, %q %q after %s; want ok within a few seconds", r.code, r.out, r.se, r.took)
		case r.who == "bob" && (r.code != 255 || !strings.Contains(r.se, "directory unavailable, try again") || r.took > 8*time.Second):
			t.Errorf("slapd hung, bob never seen: exit %d, stderr %q after %s; want \"directory unavailable, try again\" well within 10s", r.code, r.se, r.took)
		}
	}
	if logs := w.bast.logs(); strings.Contains(logs, "answers again") {
		t.Errorf("bastion says the hung server answers again:\n%s", logs)
	}
}

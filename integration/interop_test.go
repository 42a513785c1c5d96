package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/cpu"

	"github.com/bastion-ssh/bastion/config"
)

// aesInHardware is sshd's condition for steering clients to AES-GCM.
var aesInHardware = cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ || cpu.ARM64.HasAES && cpu.ARM64.HasPMULL

// needClient skips under -short and when an interop client is missing
// (scripts/test installs them all, so its run skips none).
func needClient(t *testing.T, bins ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s is not installed (scripts/test installs it): %v", b, err)
		}
	}
}

// login is what bastion's login log line says was negotiated.
type login struct{ client, kex, cipher, mac, hostKey string }

func (l login) String() string {
	mac := l.mac
	if mac == `""` {
		mac = "(AEAD)"
	}
	return fmt.Sprintf("kex %s, cipher %s, mac %s, host key %s", l.kex, l.cipher, mac, l.hostKey)
}

var loginRE = regexp.MustCompile(`msg=login .*client=("[^"]*"|\S+) kex=(\S+) cipher=(\S+) mac=(\S+) host_key=(\S+)`)

// loginsSince returns the login lines logged after byte offset from.
func (s *server) loginsSince(from int) []login {
	var out []login
	for _, m := range loginRE.FindAllStringSubmatch(s.logs()[from:], -1) {
		out = append(out, login{strings.Trim(m[1], `"`), m[2], m[3], m[4], m[5]})
	}
	return out
}

// interop is one bastion dev server and what the clients need to reach it
// and verify its host key.
type interop struct {
	s          *server
	env        []string // HOME in a temp dir: no client touches the real one
	knownHosts string   // both host keys, for OpenSSH, paramiko, asyncssh
	fps        []string // SHA256 host key fingerprints, for plink -hostkey
	dir        string
	up         string // a file to send, 256 KiB of random bytes
	record     map[string]login
	order      []string
}

func newInterop(t *testing.T, configYAML string) *interop {
	s := startDev(t, configYAML)
	ix := &interop{s: s, dir: t.TempDir(), record: map[string]login{}}
	home := filepath.Join(ix.dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	ix.env = append(os.Environ(), "HOME="+home)
	var kh bytes.Buffer
	for _, name := range []string{"ssh_host_ed25519_key.pub", "ssh_host_rsa_key.pub"} {
		p := filepath.Join(s.dir, "state", "hostkeys", name)
		pub, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&kh, "[127.0.0.1]:%s %s", s.port, pub)
		out, err := exec.Command("ssh-keygen", "-lf", p).Output()
		if err != nil {
			t.Fatalf("ssh-keygen -lf %s: %v", p, err)
		}
		ix.fps = append(ix.fps, strings.Fields(string(out))[1])
	}
	ix.knownHosts = filepath.Join(ix.dir, "known_hosts")
	ix.up = filepath.Join(ix.dir, "up")
	data := make([]byte, 256<<10)
	_, _ = rand.Read(data)
	for _, f := range []struct {
		path string
		data []byte
	}{{ix.knownHosts, kh.Bytes()}, {ix.up, data}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ix
}

// run runs a client with the test's HOME and returns its output and exit
// code, and the one login it made.
func (ix *interop) run(t *testing.T, name string, args ...string) (stdout, stderr string, code int, l login) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	from := len(ix.s.logs())
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = ix.env
	cmd.Dir = ix.dir
	cmd.Stdin = strings.NewReader("")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	// The login line is written before the session starts; give the
	// pipe from bastion's stderr a moment.
	ls := ix.s.loginsSince(from)
	for wait := time.Now().Add(5 * time.Second); len(ls) == 0 && time.Now().Before(wait); ls = ix.s.loginsSince(from) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(ls) != 1 {
		t.Fatalf("%s %q: %d logins, want 1 (exit %d)\nstdout: %s\nstderr: %s\nlog:\n%s", name, args, len(ls), code, out.String(), errb.String(), ix.s.logs()[from:])
	}
	return out.String(), errb.String(), code, ls[0]
}

// note records what a client negotiated, for the summary.
func (ix *interop) note(what string, l login) {
	if _, ok := ix.record[what]; !ok {
		ix.order = append(ix.order, what)
	}
	ix.record[what] = l
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ (%d and %d bytes)", a, b, len(x), len(y))
	}
}

// fastCipher is the cipher a client listing both families should get.
func fastCipher() string {
	if aesInHardware {
		return "aes128-gcm@openssh.com"
	}
	return "chacha20-poly1305@openssh.com"
}

func isGCM(c string) bool { return strings.HasSuffix(c, "-gcm@openssh.com") }

// TestInterop drives the SSH clients people have (OpenSSH, Dropbear,
// PuTTY, paramiko, asyncssh) and ssh-audit against the real bastion
// binary, checks each one's exec, exit status and file transfer, and the
// algorithms each one negotiated (from bastion's login log line).
func TestInterop(t *testing.T) {
	needClient(t, "ssh", "ssh-keygen")
	ix := newInterop(t, "")
	s := ix.s
	t.Cleanup(func() {
		var b strings.Builder
		for _, k := range ix.order {
			fmt.Fprintf(&b, "\n  %-40s %s", k, ix.record[k])
		}
		t.Logf("negotiated (AES in hardware: %v):%s", aesInHardware, b.String())
	})

	t.Run("openssh", func(t *testing.T) {
		sshArgs := func(extra ...string) []string {
			return append(append(extra, "-i", s.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
				"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+ix.knownHosts,
				"-p", s.port, s.user+"@127.0.0.1"), "exit 4")
		}
		_, errOut, code, l := ix.run(t, "ssh", sshArgs("-vvv")...)
		if code != 4 {
			t.Fatalf("exit %d, want 4\n%s", code, errOut)
		}
		ix.note("OpenSSH "+strings.TrimPrefix(l.client, "SSH-2.0-")+" (default)", l)
		if l.cipher != fastCipher() {
			t.Errorf("OpenSSH default: cipher %s, want %s (steered)", l.cipher, fastCipher())
		}
		// Debian's OpenSSH 9.2 has the Terrapin fix: the client saw the
		// server's kex-strict-s in the KEXINIT that answered its own
		// (read and replayed by bastion's peek), and both sides reset
		// their sequence numbers at NEWKEYS, or no packet after it would
		// have been accepted (the -ctr and chacha20 runs below depend on
		// the sequence number for their MAC or nonce).
		if !strings.Contains(errOut, "will use strict KEX ordering") {
			t.Errorf("OpenSSH did not use strict kex:\n%s", grepLines(errOut, "kex"))
		}
		// The audit log (stderr in bastion dev) has the same.
		want := `"kex":"` + l.kex + `","cipher":"` + fastCipher() + `","host_key":"ssh-ed25519"`
		found := false
		for _, line := range strings.Split(s.logs(), "\n") {
			found = found || strings.Contains(line, `"event":"auth.success"`) && strings.Contains(line, want)
		}
		if !found {
			t.Errorf("no auth.success audit event with %s:\n%s", want, grepLines(s.logs(), `"event":"auth.success"`))
		}
		for _, c := range config.DefaultCiphers {
			macs := []string{""}
			if strings.HasSuffix(c, "-ctr") {
				macs = config.DefaultMACs
			}
			for _, m := range macs {
				extra := []string{"-c", c}
				what := "OpenSSH -c " + c
				if m != "" {
					extra = append(extra, "-m", m)
					what += " -m " + m
				}
				_, errOut, code, l := ix.run(t, "ssh", sshArgs(extra...)...)
				if code != 4 {
					t.Errorf("%s: exit %d, want 4\n%s", what, code, errOut)
					continue
				}
				ix.note(what, l)
				if l.cipher != c || m != "" && l.mac != m {
					t.Errorf("%s: negotiated %s", what, l)
				}
			}
		}
	})

	t.Run("dbclient", func(t *testing.T) {
		needClient(t, "dbclient", "dropbearconvert")
		key := filepath.Join(ix.dir, "id_dropbear")
		if out, err := exec.Command("dropbearconvert", "openssh", "dropbear", s.key, key).CombinedOutput(); err != nil {
			t.Fatalf("dropbearconvert: %v\n%s", err, out)
		}
		// -y: accept the unknown host key (it goes into the test's HOME).
		out, errOut, code, l := ix.run(t, "dbclient", "-y", "-i", key, "-p", s.port, s.user+"@127.0.0.1", "echo out; exit 7")
		if code != 7 || out != "out\n" {
			t.Fatalf("dbclient: exit %d, stdout %q, want 7 and out\n%s", code, out, errOut)
		}
		ix.note("Dropbear "+strings.TrimPrefix(l.client, "SSH-2.0-")+" (default)", l)
		if isGCM(l.cipher) || l.cipher != "chacha20-poly1305@openssh.com" && !strings.HasSuffix(l.cipher, "-ctr") {
			t.Errorf("dbclient: negotiated %s, want chacha20-poly1305 or aes-ctr", l)
		}
	})

	t.Run("putty", func(t *testing.T) {
		needClient(t, "plink", "pscp", "psftp", "puttygen")
		ppk := filepath.Join(ix.dir, "id.ppk")
		if out, err := exec.Command("puttygen", s.key, "-o", ppk, "-O", "private").CombinedOutput(); err != nil {
			t.Fatalf("puttygen: %v\n%s", err, out)
		}
		// -batch: never prompt; -hostkey: the only host keys accepted.
		common := []string{"-batch", "-i", ppk, "-P", s.port}
		for _, fp := range ix.fps {
			common = append(common, "-hostkey", fp)
		}
		with := func(args ...string) []string { return append(append([]string(nil), common...), args...) }
		out, errOut, code, l := ix.run(t, "plink", with(s.user+"@127.0.0.1", "echo out; exit 5")...)
		if code != 5 || out != "out\n" {
			t.Fatalf("plink: exit %d, stdout %q, want 5 and out\n%s", code, out, errOut)
		}
		ix.note("PuTTY plink "+strings.TrimPrefix(l.client, "SSH-2.0-")+" (default)", l)
		if aesInHardware && !isGCM(l.cipher) {
			t.Errorf("plink 0.78 lists AES-GCM: negotiated %s, want AES-GCM", l)
		}
		// A wrong host key is refused.
		bad := []string{"-batch", "-i", ppk, "-P", s.port, "-hostkey", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", s.user + "@127.0.0.1", "true"}
		cmd := exec.Command("plink", bad...)
		cmd.Env = ix.env
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("plink accepted a wrong host key:\n%s", out)
		}
		for _, mode := range []string{"-sftp", "-scp"} {
			remote := filepath.Join(ix.dir, "pscp"+mode)
			down := filepath.Join(ix.dir, "down"+mode)
			_, errOut, code, l := ix.run(t, "pscp", with("-q", mode, ix.up, s.user+"@127.0.0.1:"+remote)...)
			if code != 0 {
				t.Fatalf("pscp %s put: exit %d\n%s", mode, code, errOut)
			}
			ix.note("PuTTY pscp "+mode, l)
			if _, errOut, code, _ = ix.run(t, "pscp", with("-q", mode, s.user+"@127.0.0.1:"+remote, down)...); code != 0 {
				t.Fatalf("pscp %s get: exit %d\n%s", mode, code, errOut)
			}
			sameFile(t, ix.up, down)
		}
		batch := filepath.Join(ix.dir, "psftp.batch")
		remote := filepath.Join(ix.dir, "psftp-remote")
		down := filepath.Join(ix.dir, "down-psftp")
		if err := os.WriteFile(batch, []byte(fmt.Sprintf("put %s %s\nget %s %s\nrm %s\n", ix.up, remote, remote, down, remote)), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, code, l = ix.run(t, "psftp", with("-b", batch, "-bc", s.user+"@127.0.0.1")...)
		if code != 0 {
			t.Fatalf("psftp: exit %d\n%s%s", code, out, errOut)
		}
		ix.note("PuTTY psftp", l)
		sameFile(t, ix.up, down)
		if _, err := os.Stat(remote); !os.IsNotExist(err) {
			t.Errorf("psftp rm: %s still there (%v)", remote, err)
		}
	})

	for _, lib := range []string{"paramiko", "asyncssh"} {
		t.Run(lib, func(t *testing.T) {
			needClient(t, "/usr/bin/python3")
			if out, err := exec.Command("/usr/bin/python3", "-c", "import "+lib).CombinedOutput(); err != nil {
				t.Skipf("python3-%s is not installed (scripts/test installs it): %v\n%s", lib, err, out)
			}
			script, err := filepath.Abs("testdata/pyclient.py")
			if err != nil {
				t.Fatal(err)
			}
			d := t.TempDir()
			if err := os.WriteFile(filepath.Join(d, "up"), []byte("sent over sftp by "+lib+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, code, l := ix.run(t, "/usr/bin/python3", "-W", "ignore", script, lib, "127.0.0.1", s.port, s.user, s.key, ix.knownHosts, d)
			if code != 0 {
				t.Fatalf("%s: exit %d\n%s%s", lib, code, out, errOut)
			}
			var res struct {
				Stdout, Stderr, Version string
				Status                  int
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("%s output %q: %v", lib, out, err)
			}
			if res.Stdout != "out\n" || res.Stderr != "err\n" || res.Status != 3 {
				t.Errorf("%s exec: %+v, want out, err, status 3", lib, res)
			}
			sameFile(t, filepath.Join(d, "up"), filepath.Join(d, "down"))
			ix.note(lib+" "+res.Version, l)
			switch {
			case lib == "paramiko" && strings.HasPrefix(res.Version, "2."):
				// paramiko before 3.5 has AES-CTR and no AES-GCM/chacha20.
				if l.cipher != "aes128-ctr" || l.mac != "hmac-sha2-256-etm@openssh.com" {
					t.Errorf("paramiko %s: negotiated %s, want aes128-ctr with hmac-sha2-256-etm", res.Version, l)
				}
			case lib == "asyncssh" && aesInHardware && !isGCM(l.cipher):
				t.Errorf("asyncssh lists AES-GCM: negotiated %s, want AES-GCM", l)
			}
		})
	}

	t.Run("ssh-audit", func(t *testing.T) {
		needClient(t, "ssh-audit")
		sshAudit(t, s)
	})
}

// TestInteropAuditAllCiphers runs ssh-audit against a server whose
// cipher list has no AES-GCM, so that ssh-audit, which lists AES-GCM and
// is steered to it, audits chacha20-poly1305, AES-CTR and the MACs too.
func TestInteropAuditAllCiphers(t *testing.T) {
	needClient(t, "ssh-audit")
	s := startDev(t, "ssh:\n  ciphers: [chacha20-poly1305@openssh.com, aes128-ctr, aes192-ctr, aes256-ctr]\n")
	out := sshAudit(t, s)
	for _, c := range []string{"chacha20-poly1305@openssh.com", "aes128-ctr", "aes256-ctr", "hmac-sha2-512-etm@openssh.com"} {
		if !strings.Contains(out, "(enc) "+c) && !strings.Contains(out, "(mac) "+c) {
			t.Errorf("ssh-audit did not see %s:\n%s", c, out)
		}
	}
}

// newerThanSSHAudit are algorithms ssh-audit 2.5 (Debian 12) does not
// know and warns about as unknown: ML-KEM key exchange (OpenSSH 9.9) and
// strict kex, the Terrapin countermeasure (OpenSSH 9.6), which x/crypto
// announces as a pseudo key exchange and which we keep on purpose.
var newerThanSSHAudit = []string{"mlkem768x25519-sha256", "kex-strict-s-v00@openssh.com"}

var ansiRE = regexp.MustCompile("\x1b\\[[0-9;]*m")

// sshAudit runs ssh-audit and fails on any [fail], and on any [warn]
// other than an unknown algorithm newer than ssh-audit.
func sshAudit(t *testing.T, s *server) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	raw, _ := exec.CommandContext(ctx, "ssh-audit", "-n", "-p", s.port, "127.0.0.1").CombinedOutput() // exit 1-3 on warnings
	out := ansiRE.ReplaceAllString(string(raw), "")
	if !strings.Contains(out, "(key) ssh-ed25519") || !strings.Contains(out, "(kex) curve25519-sha256") {
		t.Fatalf("ssh-audit did not audit the server:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.Contains(line, "[fail]"):
			t.Errorf("ssh-audit: %s", line)
		case strings.Contains(line, "[warn]"):
			ok := false
			for _, a := range newerThanSSHAudit {
				ok = ok || strings.Contains(line, " "+a+" ") && strings.Contains(line, "unknown algorithm")
			}
			if !ok {
				t.Errorf("ssh-audit: %s", line)
			}
		}
	}
	if t.Failed() {
		t.Logf("ssh-audit output:\n%s", out)
	}
	return out
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strconv.Quote(strings.Join(out, "; "))
}

package slapd

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Fixed names of the seeded tree.
const (
	// Base is the suffix of the test database.
	Base = "dc=example,dc=org"
	// RootDN and RootPassword are the database's administrator.
	RootDN       = "cn=admin," + Base
	RootPassword = "admin-secret"
	// BindDN and BindPassword are the bastion's (read-only) account.
	BindDN       = "cn=bastion,ou=apps," + Base
	BindPassword = "bastion-secret"
	// DisabledPolicy is the pwdPolicySubentry that marks disabled people.
	DisabledPolicy = "cn=disabled,ou=ppolicies," + Base
)

// Options configures Start. The zero value serves plain ldap:// with the
// default seed.
type Options struct {
	// LDIF is a text/template of the seed; empty means
	// integration/testdata/toolforge.ldif.
	LDIF string
	// TLS, when set, makes the server present a certificate issued by this
	// CA, on an ldaps:// listener and through StartTLS on ldap://.
	TLS *CA
	// Port and TLSPort fix the listening ports (e.g. to restart a server
	// where its clients expect it); zero picks free ones.
	Port, TLSPort int
	// AnonymousRead lets anonymous binds read the tree (by default only
	// BindDN can).
	AnonymousRead bool
}

// Server is a running slapd.
type Server struct {
	// URL is ldap://127.0.0.1:PORT/ (StartTLS is offered when TLS is set).
	URL string
	// LDAPSURL is ldaps://127.0.0.1:TLSPORT/ when TLS is set, else "".
	LDAPSURL string
	// Port and TLSPort are the listening ports (TLSPort 0 without TLS).
	Port, TLSPort int
	// Dir is the server's temporary directory (config, database, certs).
	Dir string
	// PasswordFile holds BindPassword followed by a newline.
	PasswordFile string

	t             testing.TB
	anonymousRead bool
	cmd           *exec.Cmd
	log           *syncBuffer
	done          chan struct{}
	stop          sync.Once
}

// Binary returns the path of slapd, or "" if it is not installed.
func Binary() string {
	if p, err := exec.LookPath("slapd"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/slapd"); err == nil {
		return "/usr/sbin/slapd"
	}
	return ""
}

// Require skips the test under -short when slapd is missing, and fails it
// when slapd is missing otherwise. It returns the slapd path.
func Require(t testing.TB) string {
	t.Helper()
	bin := Binary()
	if bin == "" {
		const why = "slapd is not installed (Debian: apt-get install slapd ldap-utils)"
		if testing.Short() {
			t.Skip(why + "; skipped under -short")
		}
		t.Fatal(why)
	}
	return bin
}

// Start runs a seeded slapd and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Require(t)
	dir := t.TempDir()
	s := &Server{t: t, Dir: dir, PasswordFile: filepath.Join(dir, "bind-password"), anonymousRead: opts.AnonymousRead}
	if err := os.WriteFile(s.PasswordFile, []byte(BindPassword+"\n"), 0o600); err != nil {
		t.Fatalf("write bind password file: %v", err)
	}
	conf := s.writeConfig(opts)
	s.seed(conf, opts)

	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, tlsPort := opts.Port, opts.TLSPort
		if port == 0 {
			port = freePort(t)
		}
		if opts.TLS != nil && tlsPort == 0 {
			tlsPort = freePort(t)
		}
		lastErr = s.run(bin, conf, port, tlsPort)
		if lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
		if !strings.Contains(s.log.String(), "Address already in use") || (opts.Port != 0 && attempt > 0) {
			break
		}
		time.Sleep(100 * time.Millisecond) // a fixed port may still be held by a stopped server
	}
	t.Fatalf("start slapd: %v\nslapd output:\n%s", lastErr, s.log.String())
	return nil
}

func (s *Server) run(bin, conf string, port, tlsPort int) error {
	s.Port, s.TLSPort = port, tlsPort
	s.URL = fmt.Sprintf("ldap://127.0.0.1:%d/", port)
	urls := s.URL
	s.LDAPSURL = ""
	if tlsPort != 0 {
		s.LDAPSURL = fmt.Sprintf("ldaps://127.0.0.1:%d/", tlsPort)
		urls += " " + s.LDAPSURL
	}
	debug := os.Getenv("BASTION_SLAPD_DEBUG") // e.g. "stats" to see every operation
	if debug == "" {
		debug = "0"
	}
	s.log = &syncBuffer{}
	s.cmd = exec.Command(bin, "-f", conf, "-h", urls, "-d", debug)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// If the test binary dies, slapd dies with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", bin, err)
	}
	s.done = make(chan struct{})
	s.stop = sync.Once{}
	go func() { _ = s.cmd.Wait(); close(s.done) }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ping(s.URL)
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("slapd exited during start-up (%v)", s.cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("slapd did not answer on %s within 10s: %v", s.URL, err)
		}
	}
}

// ping reads the root DSE anonymously.
func ping(url string) error {
	c, err := ldap.DialURL(url, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetTimeout(time.Second)
	_, err = c.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, 1, false, "(objectClass=*)", []string{"namingContexts"}, nil))
	return err
}

// Stop ends slapd with SIGTERM (SIGKILL after 5 s) and waits for it. It is
// safe to call more than once.
func (s *Server) Stop() { s.halt(syscall.SIGTERM) }

// Kill ends slapd abruptly with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() { s.halt(syscall.SIGKILL) }

// Pause stops slapd with SIGSTOP: the kernel still accepts connections
// for it, but nothing answers, as with a hung server. Resume undoes it;
// Stop and Kill work on a paused server.
//
// It returns once every thread of slapd is stopped (a signal takes effect
// when the process is next scheduled, which can take a while on a busy
// machine), so that nothing it answers afterwards can come from before.
func (s *Server) Pause() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGSTOP)
	deadline := time.Now().Add(10 * time.Second)
	for !stopped(s.cmd.Process.Pid) {
		if time.Now().After(deadline) {
			s.t.Fatalf("slapd (pid %d) not stopped 10s after SIGSTOP", s.cmd.Process.Pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopped tells whether every thread of pid is in the stopped state.
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 || i+2 >= len(data) || data[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Resume continues a paused slapd with SIGCONT.
func (s *Server) Resume() { _ = s.cmd.Process.Signal(syscall.SIGCONT) }

func (s *Server) halt(sig syscall.Signal) {
	s.stop.Do(func() {
		_ = s.cmd.Process.Signal(sig)
		_ = s.cmd.Process.Signal(syscall.SIGCONT) // a paused server acts on SIGTERM only once continued
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// Restart starts the stopped server again on the same ports and database,
// with tls (nil: no TLS) as its certificate authority.
func (s *Server) Restart(tls *CA) {
	s.t.Helper()
	s.Stop()
	opts := Options{TLS: tls, Port: s.Port, TLSPort: s.TLSPort, AnonymousRead: s.anonymousRead}
	if tls != nil && opts.TLSPort == 0 {
		opts.TLSPort = freePort(s.t)
	}
	conf := s.writeConfig(opts)
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if err = s.run(Binary(), conf, opts.Port, opts.TLSPort); err == nil {
			return
		}
		if !strings.Contains(s.log.String(), "Address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("restart slapd: %v\nslapd output:\n%s", err, s.log.String())
}

// Log returns what slapd has printed so far.
func (s *Server) Log() string { return s.log.String() }

// Admin returns a connection bound as RootDN, closed when the test ends.
func (s *Server) Admin(t testing.TB) *ldap.Conn {
	t.Helper()
	c, err := ldap.DialURL(s.URL, ldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
	if err != nil {
		t.Fatalf("admin dial %s: %v", s.URL, err)
	}
	c.SetTimeout(10 * time.Second)
	if err := c.Bind(RootDN, RootPassword); err != nil {
		c.Close()
		t.Fatalf("admin bind: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (s *Server) writeConfig(opts Options) string {
	t := s.t
	t.Helper()
	db := filepath.Join(s.Dir, "db")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatalf("mkdir %s: %v", db, err)
	}
	var tlsConf string
	if opts.TLS != nil {
		cert, key := opts.TLS.Issue(t)
		files := map[string][]byte{"ca.pem": opts.TLS.CertPEM, "server.pem": cert, "server.key": key}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(s.Dir, name), data, 0o600); err != nil {
				t.Fatalf("write %s: %v", name, err)
			}
		}
		tlsConf = fmt.Sprintf("TLSCACertificateFile %s\nTLSCertificateFile %s\nTLSCertificateKeyFile %s\nTLSVerifyClient never\n",
			filepath.Join(s.Dir, "ca.pem"), filepath.Join(s.Dir, "server.pem"), filepath.Join(s.Dir, "server.key"))
	}
	others := "none"
	if opts.AnonymousRead {
		others = "read"
	}
	var b strings.Builder
	for _, schema := range []string{"core", "cosine", "nis", "inetorgperson"} {
		fmt.Fprintf(&b, "include /etc/ldap/schema/%s.schema\n", schema)
	}
	fmt.Fprintf(&b, "include %s\n", filepath.Join(testdata(), "openssh-lpk.schema"))
	fmt.Fprintf(&b, `pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
sizelimit 500
timelimit 10
%[2]s
database mdb
maxsize 104857600
suffix %[3]q
rootdn %[4]q
rootpw %[5]s
directory %[6]s
index objectClass,uid,memberUid,member,cn eq
overlay ppolicy

access to attrs=userPassword
	by anonymous auth
	by * none
access to *
	by dn.exact=%[7]q read
	by * %[8]s
`, s.Dir, tlsConf, Base, RootDN, RootPassword, db, BindDN, others)
	conf := filepath.Join(s.Dir, "slapd.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("write slapd.conf: %v", err)
	}
	return conf
}

func (s *Server) seed(conf string, opts Options) {
	t := s.t
	t.Helper()
	src := opts.LDIF
	if src == "" {
		src = DefaultSeed(t)
	}
	ldif, err := RenderLDIF(src)
	if err != nil {
		t.Fatalf("render seed LDIF: %v", err)
	}
	path := filepath.Join(s.Dir, "seed.ldif")
	if err := os.WriteFile(path, []byte(ldif), 0o600); err != nil {
		t.Fatalf("write seed: %v", err)
	}
	slapadd := "/usr/sbin/slapadd"
	if p, err := exec.LookPath("slapadd"); err == nil {
		slapadd = p
	}
	out, err := exec.Command(slapadd, "-f", conf, "-l", path).CombinedOutput()
	if err != nil {
		t.Fatalf("slapadd %s: %v\n%s", path, err, out)
	}
}

// DefaultSeed returns the default seed template,
// integration/testdata/toolforge.ldif, e.g. for a test to edit.
func DefaultSeed(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testdata(), "toolforge.ldif"))
	if err != nil {
		t.Fatalf("read seed: %v", err)
	}
	return string(data)
}

// RenderLDIF expands a seed template: {{.Base}}, {{.BindPassword}},
// {{key "NAME"}} (an authorized_keys line) and {{keys64 "LINE-OR-KEY"...}}
// (the base64 of several lines in one value; an argument that is not a
// key name is used as a literal line).
func RenderLDIF(src string) (string, error) {
	tmpl, err := template.New("ldif").Funcs(template.FuncMap{
		"key": AuthorizedKey,
		"keys64": func(lines ...string) string {
			var b strings.Builder
			for _, l := range lines {
				if isKeyName(l) {
					l = AuthorizedKey(l)
				}
				b.WriteString(l + "\n")
			}
			return base64.StdEncoding.EncodeToString([]byte(b.String()))
		},
	}).Parse(src)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, struct{ Base, BindPassword string }{Base, BindPassword})
	return b.String(), err
}

// isKeyName reports whether s looks like a test key name ("carol-2").
func isKeyName(s string) bool {
	name, n, ok := strings.Cut(s, "-")
	if !ok || name == "" || strings.ContainsAny(name, " #") {
		return false
	}
	_, err := strconv.Atoi(n)
	return err == nil
}

func testdata() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("slapd: cannot locate integration/testdata")
	}
	return filepath.Join(filepath.Dir(file), "..", "testdata")
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

package sshd

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Cipher lists as real clients send them.
var (
	openSSHCiphers  = []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR, ssh.CipherAES128GCM, ssh.CipherAES256GCM}
	dropbearCiphers = []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES128CTR, ssh.CipherAES256CTR} // 2022.83, Debian 12
	paramikoCiphers = []string{ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR, "aes128-cbc", "3des-cbc"}
	paramikoMACs    = []string{ssh.HMACSHA256, ssh.HMACSHA512, ssh.HMACSHA256ETM, ssh.HMACSHA512ETM, ssh.HMACSHA1}
)

// fastCipher is what steering should pick for a client that lists both
// families.
func fastCipher() string {
	if aesInHardware {
		return ssh.CipherAES128GCM
	}
	return ssh.CipherChaCha20Poly1305
}

func TestNegotiation(t *testing.T) {
	for _, tt := range []struct {
		name                 string
		ciphers, macs, kex   []string // configured
		client               ssh.Config
		cipher, mac, wantKex string // "" cipher: refused
	}{
		{name: "openssh default", client: ssh.Config{Ciphers: openSSHCiphers}, cipher: fastCipher()},
		{name: "dropbear default", client: ssh.Config{Ciphers: dropbearCiphers}, cipher: ssh.CipherChaCha20Poly1305},
		{name: "paramiko 2.12", client: ssh.Config{Ciphers: paramikoCiphers, MACs: paramikoMACs, KeyExchanges: []string{"curve25519-sha256@libssh.org", ssh.KeyExchangeECDHP256}},
			cipher: ssh.CipherAES128CTR, mac: ssh.HMACSHA256ETM, wantKex: "curve25519-sha256@libssh.org"},
		{name: "forced chacha20", client: ssh.Config{Ciphers: []string{ssh.CipherChaCha20Poly1305}}, cipher: ssh.CipherChaCha20Poly1305},
		{name: "forced aes256-gcm", client: ssh.Config{Ciphers: []string{ssh.CipherAES256GCM}}, cipher: ssh.CipherAES256GCM},
		{name: "forced aes192-ctr, sha2-512-etm", client: ssh.Config{Ciphers: []string{ssh.CipherAES192CTR}, MACs: []string{ssh.HMACSHA512ETM}}, cipher: ssh.CipherAES192CTR, mac: ssh.HMACSHA512ETM},
		{name: "aes256-gcm listed after chacha", client: ssh.Config{Ciphers: []string{ssh.CipherChaCha20Poly1305, ssh.CipherAES256GCM}},
			cipher: map[bool]string{true: ssh.CipherAES256GCM, false: ssh.CipherChaCha20Poly1305}[aesInHardware]},
		{name: "curve25519 forced", client: ssh.Config{Ciphers: openSSHCiphers, KeyExchanges: []string{ssh.KeyExchangeCurve25519}}, cipher: fastCipher(), wantKex: ssh.KeyExchangeCurve25519},
		{name: "operator: chacha20 only", ciphers: []string{ssh.CipherChaCha20Poly1305}, client: ssh.Config{Ciphers: openSSHCiphers}, cipher: ssh.CipherChaCha20Poly1305},
		{name: "operator: chacha20 only, client aes-gcm only", ciphers: []string{ssh.CipherChaCha20Poly1305}, client: ssh.Config{Ciphers: []string{ssh.CipherAES128GCM}}},
		{name: "operator: aes-ctr, sha2-512-etm", ciphers: []string{ssh.CipherAES256CTR}, macs: []string{ssh.HMACSHA512ETM}, client: ssh.Config{Ciphers: openSSHCiphers}, cipher: ssh.CipherAES256CTR, mac: ssh.HMACSHA512ETM},
		{name: "operator: mlkem only, client curve25519 only", kex: []string{ssh.KeyExchangeMLKEM768X25519}, client: ssh.Config{KeyExchanges: []string{ssh.KeyExchangeCurve25519}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(s *Settings) { s.SSH.Ciphers, s.SSH.MACs, s.SSH.Kex = tt.ciphers, tt.macs, tt.kex })
			c, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{
				User: f.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(f.signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
				Config: tt.client,
			})
			if tt.cipher == "" {
				if err == nil {
					c.Close()
					t.Fatal("connected, want no common algorithm")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got := c.Conn.(ssh.AlgorithmsConnMetadata).Algorithms()
			if got.Write.Cipher != tt.cipher || got.Read.Cipher != tt.cipher {
				t.Errorf("cipher %s/%s, want %s", got.Write.Cipher, got.Read.Cipher, tt.cipher)
			}
			if tt.mac != "" && got.Write.MAC != tt.mac {
				t.Errorf("mac %s, want %s", got.Write.MAC, tt.mac)
			}
			wantKex := tt.wantKex
			if wantKex == "" {
				wantKex = ssh.KeyExchangeMLKEM768X25519
			}
			if got.KeyExchange != wantKex {
				t.Errorf("kex %s, want %s", got.KeyExchange, wantKex)
			}
			// The server's login line says the same.
			mac := tt.mac
			if mac == "" {
				mac = `""` // AEAD
			}
			line := "cipher=" + tt.cipher + " mac=" + mac + " host_key=ssh-ed25519"
			waitCond(t, "login line with "+line, 5*time.Second, func() bool {
				return strings.Contains(f.logs.String(), "kex="+wantKex+" "+line)
			})
		})
	}
}

// kexInitPacket builds a client's first binary packet: a KEXINIT with
// the given name-lists (kex, host key, ciphers, MACs), unencrypted.
func kexInitPacket(kex, hostKeys, ciphers, macs []string) []byte {
	var p bytes.Buffer
	p.WriteByte(msgKexInit)
	p.Write(make([]byte, 16)) // cookie
	for _, l := range [][]string{kex, hostKeys, ciphers, ciphers, macs, macs, {"none"}, {"none"}, nil, nil} {
		s := strings.Join(l, ",")
		_ = binary.Write(&p, binary.BigEndian, uint32(len(s)))
		p.WriteString(s)
	}
	p.Write([]byte{0, 0, 0, 0, 0}) // first_kex_packet_follows, reserved
	pad := 8 - (5+p.Len())%8
	if pad < 4 {
		pad += 8
	}
	out := binary.BigEndian.AppendUint32(nil, uint32(1+p.Len()+pad))
	out = append(out, byte(pad))
	out = append(out, p.Bytes()...)
	return append(out, make([]byte, pad)...)
}

// readServerKexInit reads the server's version line and KEXINIT.
func readServerKexInit(t *testing.T, nc net.Conn) *clientHello {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var buf []byte
	one := make([]byte, 4096)
	for {
		h, state := parseHello(buf)
		if state == helloDone {
			return h
		}
		if state == helloBad {
			t.Fatalf("server sent a bad hello: %q", buf)
		}
		n, err := nc.Read(one)
		buf = append(buf, one[:n]...)
		if err != nil {
			t.Fatalf("reading server hello: %v (got %q)", err, buf)
		}
	}
}

// TestSteeredKexInit checks, on the wire, that the server's KEXINIT
// answers the client's: only the fast family to a client that lists it,
// everything to one that does not, and strict kex (the Terrapin
// countermeasure) announced either way.
func TestSteeredKexInit(t *testing.T) {
	f := newFixture(t, nil)
	for _, tt := range []struct {
		name    string
		ciphers []string
		want    []string
	}{
		{"openssh", openSSHCiphers, map[bool][]string{true: {ssh.CipherAES128GCM, ssh.CipherAES256GCM}, false: {ssh.CipherChaCha20Poly1305}}[aesInHardware]},
		{"dropbear", dropbearCiphers, map[bool][]string{true: defaultCiphersForTest(), false: {ssh.CipherChaCha20Poly1305}}[aesInHardware]},
		{"paramiko", paramikoCiphers, defaultCiphersForTest()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", f.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			hello := append([]byte("SSH-2.0-test_1.0\r\n"), kexInitPacket([]string{ssh.KeyExchangeCurve25519, "kex-strict-c-v00@openssh.com"}, []string{ssh.KeyAlgoED25519}, tt.ciphers, []string{ssh.HMACSHA256ETM})...)
			if _, err := nc.Write(hello); err != nil {
				t.Fatal(err)
			}
			h := readServerKexInit(t, nc)
			if strings.Join(h.ciphersS2C, ",") != strings.Join(tt.want, ",") {
				t.Errorf("server ciphers %v, want %v", h.ciphersS2C, tt.want)
			}
			if !containsStr(h.kex, "kex-strict-s-v00@openssh.com") {
				t.Errorf("server kex list %v lacks kex-strict-s-v00@openssh.com", h.kex)
			}
		})
	}
}

func defaultCiphersForTest() []string {
	return []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305, ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR}
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestParseHello(t *testing.T) {
	t.Parallel()
	pkt := kexInitPacket([]string{"curve25519-sha256"}, []string{"ssh-ed25519"}, []string{"aes128-ctr", "chacha20-poly1305@openssh.com"}, []string{"hmac-sha2-256-etm@openssh.com"})
	notKexInit := append([]byte(nil), pkt...)
	notKexInit[5] = 21
	huge := binary.BigEndian.AppendUint32(nil, maxHelloPacket)
	longList := append([]byte(nil), pkt...)
	binary.BigEndian.PutUint32(longList[4+1+1+16:], 0xffff) // the kex name-list
	for _, tt := range []struct {
		name string
		in   []byte
		want helloState
	}{
		{"whole", append([]byte("SSH-2.0-x\r\n"), pkt...), helloDone},
		{"LF only", append([]byte("SSH-2.0-x\n"), pkt...), helloDone},
		{"and more after", append(append([]byte("SSH-2.0-x\r\n"), pkt...), 1, 2, 3), helloDone},
		{"a line before", append([]byte("hello\r\nSSH-2.0-x\r\n"), pkt...), helloDone},
		{"partial line", []byte("SSH-2.0-"), helloShort},
		{"partial packet", append([]byte("SSH-2.0-x\r\n"), pkt[:40]...), helloShort},
		{"no length yet", []byte("SSH-2.0-x\r\n\x00\x00"), helloShort},
		{"line too long", []byte("SSH-2.0-" + strings.Repeat("x", 300)), helloBad},
		{"line too long, ended", []byte("SSH-2.0-" + strings.Repeat("x", 300) + "\r\n"), helloBad},
		{"too many lines", []byte(strings.Repeat("junk\r\n", maxPreVersionLines+2)), helloBad},
		{"packet over 35000 bytes", append([]byte("SSH-2.0-x\r\n"), huge...), helloBad},
		{"not a KEXINIT", append([]byte("SSH-2.0-x\r\n"), notKexInit...), helloBad},
		{"padding past the packet", []byte("SSH-2.0-x\r\n\x00\x00\x00\x08\xff1234567"), helloBad},
		{"name-list past the packet", append([]byte("SSH-2.0-x\r\n"), longList...), helloBad},
	} {
		h, got := parseHello(tt.in)
		if got != tt.want {
			t.Errorf("%s: state %d, want %d", tt.name, got, tt.want)
		}
		if got == helloDone && strings.Join(h.ciphersC2S, ",") != "aes128-ctr,chacha20-poly1305@openssh.com" {
			t.Errorf("%s: ciphers %v", tt.name, h.ciphersC2S)
		}
	}
}

// TestMalformedHello: what the peek cannot parse goes to x/crypto
// untouched, which refuses it; the server carries on.
func TestMalformedHello(t *testing.T) {
	f := newFixture(t, nil)
	for _, junk := range []string{
		"SSH-2.0-x\r\n\x00\x00\x00\x08\xff1234567",
		"SSH-2.0-" + strings.Repeat("x", 400) + "\r\n",
		"GET / HTTP/1.1\r\n\r\n",
	} {
		nc, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = nc.Write([]byte(junk))
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		out, _ := io.ReadAll(nc)
		nc.Close()
		if !bytes.HasPrefix(out, []byte(serverVersion+"\r\n")) || bytes.Count(out, []byte(serverVersion)) != 1 {
			t.Errorf("%q: server sent %q, want its version line once", junk, out)
		}
	}
	c := f.dial(t, f.user) // still serving
	c.Close()
}

// BenchmarkParseHello is the peek's CPU cost per login: parsing an
// OpenSSH 9.2 client's identification line and KEXINIT.
func BenchmarkParseHello(b *testing.B) {
	in := append([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"), kexInitPacket(
		[]string{"sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521", "diffie-hellman-group-exchange-sha256", "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512", "diffie-hellman-group14-sha256", "ext-info-c", "kex-strict-c-v00@openssh.com"},
		[]string{"ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256-cert-v01@openssh.com", "rsa-sha2-512-cert-v01@openssh.com", "ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"},
		openSSHCiphers,
		[]string{"umac-64-etm@openssh.com", "umac-128-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha1-etm@openssh.com", "umac-64@openssh.com", "umac-128@openssh.com", "hmac-sha2-256", "hmac-sha2-512", "hmac-sha1"})...)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, st := parseHello(in); st != helloDone {
			b.Fatal(st)
		}
	}
}

// waitingClient holds a client's writes after its identification line
// until it has read the server's first packet, as a client that waits
// for the server's KEXINIT before sending its own would.
type waitingClient struct {
	net.Conn
	mu       sync.Mutex
	lineSent bool
	held     []byte
	seen     []byte
	released bool
}

func (w *waitingClient) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.released {
		return w.Conn.Write(p)
	}
	if !w.lineSent {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return w.Conn.Write(p)
		}
		w.lineSent = true
		if _, err := w.Conn.Write(p[:i+1]); err != nil {
			return 0, err
		}
		w.held = append(w.held, p[i+1:]...)
		return len(p), nil
	}
	w.held = append(w.held, p...)
	return len(p), nil
}

func (w *waitingClient) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.released {
		w.seen = append(w.seen, p[:n]...)
		if _, st := parseHello(w.seen); st == helloDone {
			w.released = true
			if _, err := w.Conn.Write(w.held); err != nil {
				return n, err
			}
		}
	}
	return n, err
}

// TestClientWaitsForServerKexInit: a client that sends nothing after its
// identification line until it has the server's KEXINIT is served after
// helloWait, with the whole lists.
func TestClientWaitsForServerKexInit(t *testing.T) {
	saved := helloWait
	t.Cleanup(func() { helloWait = saved }) // after the server's cleanup
	helloWait = 300 * time.Millisecond
	f := newFixture(t, nil)
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	sc, chans, reqs, err := ssh.NewClientConn(&waitingClient{Conn: nc}, f.addr, &ssh.ClientConfig{
		User: f.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(f.signer)}, HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Config: ssh.Config{Ciphers: openSSHCiphers},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := ssh.NewClient(sc, chans, reqs)
	defer c.Close()
	if d := time.Since(t0); d < helloWait {
		t.Errorf("logged in after %s, before helloWait (%s) had passed", d, helloWait)
	}
	// Not steered: the client's own first choice.
	if got := sc.(ssh.AlgorithmsConnMetadata).Algorithms().Write.Cipher; got != ssh.CipherChaCha20Poly1305 {
		t.Errorf("cipher %s, want the client's first choice, chacha20-poly1305", got)
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := s.Output("echo ok"); err != nil || string(out) != "ok\n" {
		t.Errorf("exec: %q, %v", out, err)
	}
}

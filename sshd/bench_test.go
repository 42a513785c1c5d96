package sshd

import (
	"io"
	"net"
	"testing"

	"golang.org/x/crypto/ssh"
)

// BenchmarkLogin measures a whole login over a real TCP connection:
// handshake, public-key auth, a session running `true`, exit status.
func BenchmarkLogin(b *testing.B) {
	f := newFixture(b, nil)
	b.ReportAllocs()
	for b.Loop() {
		c := f.dial(b, f.user)
		s, err := c.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Run("true"); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkThroughput streams 256 MiB into `cat > /dev/null`.
func BenchmarkThroughput(b *testing.B) {
	for _, cipher := range []string{ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305} {
		b.Run(cipher, func(b *testing.B) {
			f := newFixture(b, func(s *Settings) { s.SSH.Ciphers = []string{cipher} })
			c, err := ssh.Dial("tcp", f.addr, &ssh.ClientConfig{
				User: f.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(f.signer)},
				HostKeyCallback: ssh.InsecureIgnoreHostKey(),
				Config:          ssh.Config{Ciphers: []string{cipher}},
			})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			const size = 256 << 20
			buf := make([]byte, 256<<10)
			b.SetBytes(size)
			for b.Loop() {
				s, err := c.NewSession()
				if err != nil {
					b.Fatal(err)
				}
				w, _ := s.StdinPipe()
				if err := s.Start("cat > /dev/null"); err != nil {
					b.Fatal(err)
				}
				for sent := 0; sent < size; sent += len(buf) {
					if _, err := w.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				w.Close()
				if err := s.Wait(); err != nil && err != io.EOF {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkForward moves 256 MiB through a direct-tcpip channel (ssh -L)
// to a sink on loopback, with aes128-gcm: the server's copy path between
// the channel and the upstream socket.
func BenchmarkForward(b *testing.B) {
	f := newFixture(b, func(s *Settings) { s.SSH.Ciphers = []string{ssh.CipherAES128GCM} })
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	got := make(chan int64)
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, c)
			c.Close()
			got <- n
		}
	}()
	c := f.dial(b, f.user)
	defer c.Close()
	const size = 256 << 20
	buf := make([]byte, 256<<10)
	b.SetBytes(size)
	for b.Loop() {
		conn, err := c.Dial("tcp", sink.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := conn.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		conn.Close()
		if n := <-got; n != size {
			b.Fatalf("sink got %d bytes, want %d", n, size)
		}
	}
}

// BenchmarkHandshake is what the bench's handshake rate measures: a TCP
// connection, the key exchange (curve25519, ssh-ed25519, aes128-gcm) and
// public key authentication, then close.
func BenchmarkHandshake(b *testing.B) {
	f := newFixture(b, nil)
	cfg := &ssh.ClientConfig{
		User: f.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(f.signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Config: ssh.Config{KeyExchanges: []string{ssh.KeyExchangeCurve25519},
			Ciphers: []string{ssh.CipherAES128GCM}},
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
	}
	b.ReportAllocs()
	for b.Loop() {
		c, err := ssh.Dial("tcp", f.addr, cfg)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

package sshd

import (
	"io"
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

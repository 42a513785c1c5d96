package main

// Benchmarks of golang.org/x/crypto/ssh alone (no bastion code), to tell
// the library's ceilings from ours:
//
//	go test ./bench -run '^$' -bench . -benchtime 2s
//	go test ./bench -run '^$' -bench 'Channel/aes128-gcm' -cpuprofile cpu.out
//
// They drive an in-process x/crypto server and client over a loopback TCP
// connection, the way bastion and an OpenSSH client talk.

import (
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"testing"

	"golang.org/x/crypto/ssh"
)

type pair struct {
	client *ssh.Client
	ln     net.Listener
	done   chan struct{}
}

func newPair(tb testing.TB, kex, cipher, mac string, serve func(ssh.NewChannel)) *pair {
	tb.Helper()
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		tb.Fatal(err)
	}
	_, userPriv, _ := ed25519.GenerateKey(rand.Reader)
	userSigner, err := ssh.NewSignerFromKey(userPriv)
	if err != nil {
		tb.Fatal(err)
	}
	algos := ssh.Config{KeyExchanges: []string{kex}, Ciphers: []string{cipher}}
	if mac != "" {
		algos.MACs = []string{mac}
	}
	scfg := &ssh.ServerConfig{
		Config:            algos,
		PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil },
	}
	scfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &pair{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, chans, reqs, err := ssh.NewServerConn(nc, scfg)
				if err != nil {
					nc.Close()
					return
				}
				go ssh.DiscardRequests(reqs)
				for nch := range chans {
					go serve(nch)
				}
			}()
		}
	}()
	ccfg := &ssh.ClientConfig{
		User: "bench", Auth: []ssh.AuthMethod{ssh.PublicKeys(userSigner)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Config: algos,
	}
	if serve != nil {
		c, err := ssh.Dial("tcp", ln.Addr().String(), ccfg)
		if err != nil {
			tb.Fatal(err)
		}
		p.client = c
	}
	tb.Cleanup(func() {
		if p.client != nil {
			p.client.Close()
		}
		ln.Close()
		<-p.done
	})
	return p
}

// discard accepts a channel and reads it to the end.
func discard(nch ssh.NewChannel) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	_, _ = io.Copy(io.Discard, ch)
	ch.Close()
}

var channelCiphers = []struct{ name, cipher, mac string }{
	{"aes128-gcm", ssh.CipherAES128GCM, ""},
	{"aes256-gcm", ssh.CipherAES256GCM, ""},
	{"chacha20-poly1305", ssh.CipherChaCha20Poly1305, ""},
	{"aes128-ctr+hmac-sha2-256-etm", ssh.CipherAES128CTR, ssh.HMACSHA256ETM},
}

// BenchmarkChannel is one channel's throughput, client to server, in
// 32 KiB writes (what scp, sftp and io.Copy hand to the channel).
func BenchmarkChannel(b *testing.B) {
	for _, c := range channelCiphers {
		b.Run(c.name, func(b *testing.B) {
			p := newPair(b, ssh.KeyExchangeCurve25519, c.cipher, c.mac, discard)
			ch, reqs, err := p.client.OpenChannel("session", nil)
			if err != nil {
				b.Fatal(err)
			}
			go ssh.DiscardRequests(reqs)
			buf := make([]byte, 32*1024)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := ch.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			_ = ch.CloseWrite()
			ch.Close()
		})
	}
}

// BenchmarkHandshake is one connection: key exchange, ed25519 host key,
// public key authentication, close; both ends in this process.
func BenchmarkHandshake(b *testing.B) {
	for _, kex := range []string{ssh.KeyExchangeCurve25519, ssh.KeyExchangeMLKEM768X25519} {
		b.Run(kex, func(b *testing.B) {
			p := newPair(b, kex, ssh.CipherAES128GCM, "", nil)
			_, userPriv, _ := ed25519.GenerateKey(rand.Reader)
			userSigner, _ := ssh.NewSignerFromKey(userPriv)
			cfg := &ssh.ClientConfig{
				User: "bench", Auth: []ssh.AuthMethod{ssh.PublicKeys(userSigner)},
				HostKeyCallback: ssh.InsecureIgnoreHostKey(),
				Config:          ssh.Config{KeyExchanges: []string{kex}, Ciphers: []string{ssh.CipherAES128GCM}},
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := login(p.ln.Addr().String(), cfg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

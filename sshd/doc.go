// Package sshd is bastion's SSH server, and the only package that speaks
// the SSH protocol (golang.org/x/crypto/ssh; auth and its directories use
// only its key types). It owns the listener, host
// keys, the algorithms offered, public-key authentication against an
// auth.Directory, the limits (login grace time, auth tries,
// unauthenticated-connection cap, per-source and per-user caps,
// keepalives, idle and session timeouts), channel dispatch (session:
// shell, exec, subsystem sftp, become; direct-tcpip: ssh -L, each checked by
// internal/forwardpolicy's Policy before the backend dials it), agent and
// remote forwarding (auth-agent-req, tcpip-forward: the backend's
// session.Listener listens, each accepted connection comes back to the
// client as an auth-agent@openssh.com or forwarded-tcpip channel;
// remote.go) and the graceful drain.
//
// Every connection is a goroutine tree rooted in the connection's context:
// closing the connection cancels everything below it, and Shutdown waits
// for every tree. sshd knows auth.Directory and session.Backend, never
// LDAP or Kubernetes.
//
// It must not import auth/ldap, auth/static, session/local, session/kube
// or k8s.io/client-go.
//
// # Algorithms and the cipher steering
//
// Every client gets the whole modern set (config.DefaultKex,
// DefaultCiphers, DefaultMACs; narrowed by ssh.kex, ssh.ciphers,
// ssh.macs), so that OpenSSH, PuTTY, Dropbear (no AES-GCM in its default
// build), paramiko before 3.5 (AES-CTR only), asyncssh, libssh2 and JSch
// all connect. In SSH the client's order decides, and OpenSSH clients list
// chacha20-poly1305 first; x/crypto's chacha20 has no amd64 assembly and
// runs at about a third of AES-GCM's speed where the CPU has AES
// instructions (go test -bench Channel ./bench). So, per connection, the
// server offers only the fast family when the client lists it: AES-GCM
// where the CPU has AES and carry-less multiply instructions, else
// chacha20-poly1305 (algorithms.go). A client that lists neither gets
// everything and its own first choice.
//
// x/crypto sends its KEXINIT from a ServerConfig fixed before it reads
// the client's, hence peekHello (hello.go): before x/crypto starts, the
// server writes its identification line, reads the client's line and
// first KEXINIT (unencrypted; at most 255 bytes a line, a few lines, one
// packet of at most 35000 bytes, within helloWait and the login grace
// time), builds this connection's ServerConfig from it, and hands
// x/crypto a conn that replays the bytes read, untouched, and drops
// x/crypto's copy of the identification line. x/crypto thus sees the
// client's byte stream exactly: the same exchange hash, the same packet
// sequence numbers, so strict kex (kex-strict-*-v00@openssh.com, the
// Terrapin countermeasure, which x/crypto implements) holds. Anything the
// peek cannot parse is replayed all the same, with the whole lists, and
// x/crypto decides. The alternatives were worse: a chacha20 fast enough
// that the choice stops mattering means assembly we would maintain (or a
// fork of x/crypto), and offering AES-GCM alone shut out Dropbear and
// paramiko.
//
// Measured on a busy 2-core AMD EPYC (go test -bench
// 'ParseHello|Login|Throughput' ./sshd): the steering is worth 121 MB/s
// with aes128-gcm against 44 MB/s with chacha20-poly1305 for a stream
// into `cat`; parsing an OpenSSH hello costs 8-13 µs and 2 KB
// (BenchmarkParseHello), against 7 ms for a whole login (BenchmarkLogin).
// The server's KEXINIT now leaves after the client's arrives instead of
// beside it, which adds at most half a round trip to a login, as every
// client we know sends its KEXINIT without waiting for ours; one that
// waited would be served after helloWait with the whole lists. In
// exchange x/crypto reads the identification line from memory instead of
// one read(2) per byte.
package sshd

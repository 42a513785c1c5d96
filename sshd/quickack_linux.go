package sshd

import (
	"net"
	"sync/atomic"
	"syscall"
)

// quickAckConn re-arms TCP_QUICKACK after every read until the
// handshake is over. OpenSSH's client leaves Nagle's algorithm on for
// sessions without a tty and sends handshake messages in pairs (KEXINIT
// then KEX_ECDH_INIT, NEWKEYS then SERVICE_REQUEST): the second waits for
// the ACK of the first, which Linux delays by up to 40 ms when the server
// has nothing to send back. TCP_QUICKACK is not sticky, hence the re-arm.
type quickAckConn struct {
	net.Conn
	raw  syscall.RawConn
	done atomic.Bool
}

// withQuickAck wraps a TCP connection for the handshake; stop ends the
// extra setsockopt calls once the user is authenticated.
func withQuickAck(nc net.Conn) (conn net.Conn, stop func()) {
	sc, ok := nc.(syscall.Conn) // a *net.TCPConn, or readAheadConn over one
	if !ok {
		return nc, func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nc, func() {}
	}
	q := &quickAckConn{Conn: nc, raw: raw}
	q.arm()
	return q, func() { q.done.Store(true) }
}

func (q *quickAckConn) arm() {
	_ = q.raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}

func (q *quickAckConn) Read(p []byte) (int, error) {
	n, err := q.Conn.Read(p)
	if !q.done.Load() {
		q.arm()
	}
	return n, err
}

package sshd

import (
	"net"
	"sync"
	"syscall"
)

// readAheadSize is what one read(2) takes from the socket during a bulk
// transfer: eight 32 KiB packets (OpenSSH reads its socket 256 KiB at a
// time too).
const readAheadSize = 256 << 10

var readAheadBufs = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}

// readAheadConn reads a busy connection in large chunks. x/crypto reads
// each packet through a 4 KiB bufio.Reader in two read(2) calls: the
// first 4 KiB (length and start), then the rest of a 32 KiB packet
// straight into the packet's buffer, 65,536 calls per GiB. Here, while
// packets arrive faster than x/crypto reads them, one read(2) serves up
// to eight, for one more copy of the data (in user space, where the
// kernel's per-call cost of a TCP receive is higher); `ssh -L` with
// aes128-gcm uses about 8 % less server CPU per GiB (bench/notes.md).
//
// Only data already in the socket is read ahead: when the caller wants
// the rest of a large packet (or the last read-ahead found data), one
// non-blocking read(2) fills a pooled buffer; when the socket is empty
// the buffer goes back to the pool and the caller's own Read blocks, as
// without this type. An idle connection therefore holds no buffer, and
// an interactive one (small packets, read whole by x/crypto's 4 KiB
// fill) makes no extra call. A connection holds at most one buffer, and
// only while x/crypto has not read what it holds.
//
// Read is called by x/crypto's read loop alone (and by peekHello before
// it); the other methods are the connection's.
type readAheadConn struct {
	net.Conn
	raw  syscall.RawConn
	buf  *[]byte // pooled; nil when nothing is buffered
	data []byte  // unread part of *buf
	busy bool    // the last read-ahead found data
}

// withReadAhead wraps a TCP connection; other connections are returned
// as they are.
func withReadAhead(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	return &readAheadConn{Conn: nc, raw: raw}
}

// SyscallConn is the TCP connection's (for setsockopt).
func (r *readAheadConn) SyscallConn() (syscall.RawConn, error) { return r.raw, nil }

func (r *readAheadConn) Read(p []byte) (int, error) {
	if len(r.data) == 0 && (r.busy || len(p) > 4096) {
		r.fill()
	}
	if len(r.data) > 0 {
		n := copy(p, r.data)
		r.data = r.data[n:]
		if len(r.data) == 0 {
			readAheadBufs.Put(r.buf)
			r.buf, r.data = nil, nil
		}
		return n, nil
	}
	return r.Conn.Read(p)
}

// fill reads what the socket holds, without waiting. Errors (EAGAIN,
// or a closed or broken connection) are left to the caller's own Read,
// which waits or reports them.
func (r *readAheadConn) fill() {
	b := readAheadBufs.Get().(*[]byte)
	n := 0
	_ = r.raw.Read(func(fd uintptr) bool {
		n, _ = syscall.Read(int(fd), *b)
		return true // one attempt: never wait here
	})
	if n <= 0 {
		readAheadBufs.Put(b)
		r.busy = false
		return
	}
	r.buf, r.data, r.busy = b, (*b)[:n], true
}

package sshd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"time"
)

// serverVersion is bastion's identification string (RFC 4253 section 4.2).
const serverVersion = "SSH-2.0-bastion"

// Bounds on what is read before x/crypto takes over.
const (
	// maxVersionLine is RFC 4253's limit on an identification line,
	// CR LF included.
	maxVersionLine = 255
	// maxPreVersionLines is how many other lines may come first. Only a
	// server may send them (RFC 4253 section 4.2); x/crypto tolerates
	// 1024 from a client, and decides alone past our few.
	maxPreVersionLines = 4
	// maxHelloPacket is the packet size every implementation must accept
	// (RFC 4253 section 6.1), length field included. A first KEXINIT is
	// 1-2 KB in practice.
	maxHelloPacket = 35000
)

// helloWait bounds the wait for the client's KEXINIT. Every client we
// know sends it without waiting for ours; one that waits is served after
// helloWait with the whole algorithm lists. A variable for tests.
var helloWait = 5 * time.Second

const msgKexInit = 20

// clientHello is what the client proposed in its first KEXINIT.
type clientHello struct {
	kex, hostKeys          []string
	ciphersC2S, ciphersS2C []string
	macsC2S, macsS2C       []string
}

// peekHello sends our identification line, then reads the client's
// identification line and first KEXINIT, with every read bounded in size
// and by helloWait (and by grace, the login deadline already set on nc).
// It returns a conn that replays every byte read, untouched, to
// x/crypto, and drops x/crypto's copy of the identification line that we
// already sent; so x/crypto sees the byte stream the client sent, and
// packet sequence numbers (which strict kex checks) are those of the
// wire. The hello is nil when the client did not send a well-formed one
// in time: x/crypto then sees the same bytes and decides.
func peekHello(nc net.Conn, grace time.Time) (net.Conn, *clientHello) {
	line := []byte(serverVersion + "\r\n")
	rc := &replayConn{Conn: nc, unsent: line}
	if _, err := nc.Write(line); err != nil {
		rc.unsent = nil // x/crypto writes again and sees the error
		return rc, nil
	}
	wait := time.Now().Add(helloWait)
	if wait.After(grace) {
		wait = grace
	}
	_ = nc.SetReadDeadline(wait)
	defer func() { _ = nc.SetReadDeadline(grace) }()

	buf := make([]byte, 0, 2048)
	for {
		if h, state := parseHello(buf); state != helloShort {
			rc.replay = buf
			return rc, h
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			// Timeout, EOF or reset: x/crypto, reading on from the
			// replayed bytes, meets the same end (or, after a timeout,
			// waits out the rest of the grace time).
			h, _ := parseHello(buf)
			rc.replay = buf
			return rc, h
		}
	}
}

type helloState int

const (
	helloShort helloState = iota // need more bytes
	helloDone
	helloBad // not a hello within the bounds
)

// parseHello parses identification lines and the first binary packet at
// the start of b.
func parseHello(b []byte) (*clientHello, helloState) {
	// Lines up to and including the one that starts with "SSH-".
	for lines := 0; ; lines++ {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(b) >= maxVersionLine {
				return nil, helloBad
			}
			return nil, helloShort
		}
		if i+1 > maxVersionLine || lines > maxPreVersionLines {
			return nil, helloBad
		}
		version := bytes.HasPrefix(b, []byte("SSH-"))
		b = b[i+1:]
		if version {
			break
		}
	}
	if len(b) < 4 {
		return nil, helloShort
	}
	n := binary.BigEndian.Uint32(b)
	if n < 6 || n > maxHelloPacket-4 {
		return nil, helloBad
	}
	if uint32(len(b)-4) < n {
		return nil, helloShort
	}
	pkt := b[4 : 4+n]
	pad := int(pkt[0])
	if pad+2 > len(pkt) {
		return nil, helloBad
	}
	h, err := parseKexInit(pkt[1 : len(pkt)-pad])
	if err != nil {
		return nil, helloBad
	}
	return h, helloDone
}

var errShortKexInit = errors.New("short KEXINIT")

// parseKexInit reads the name-lists of a KEXINIT payload (RFC 4253
// section 7.1): the message number, a 16-byte cookie, then ten
// name-lists, of which we keep the first six.
func parseKexInit(p []byte) (*clientHello, error) {
	if len(p) < 17 || p[0] != msgKexInit {
		return nil, errors.New("not a KEXINIT")
	}
	p = p[17:]
	var lists [6][]string
	for i := range lists {
		if len(p) < 4 {
			return nil, errShortKexInit
		}
		n := binary.BigEndian.Uint32(p)
		if uint32(len(p)-4) < n {
			return nil, errShortKexInit
		}
		if n > 0 {
			lists[i] = strings.Split(string(p[4:4+n]), ",")
		}
		p = p[4+n:]
	}
	return &clientHello{
		kex: lists[0], hostKeys: lists[1],
		ciphersC2S: lists[2], ciphersS2C: lists[3],
		macsC2S: lists[4], macsS2C: lists[5],
	}, nil
}

// replayConn returns the bytes peekHello read before reading on, and
// drops the identification line peekHello already wrote from x/crypto's
// first write. Reads and writes come from different goroutines; each
// field belongs to one side.
type replayConn struct {
	net.Conn
	replay []byte // Read side
	unsent []byte // Write side: what x/crypto will write that was sent already
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.replay) > 0 {
		n := copy(p, r.replay)
		r.replay = r.replay[n:]
		if len(r.replay) == 0 {
			r.replay = nil // let the buffer go
		}
		return n, nil
	}
	return r.Conn.Read(p)
}

func (r *replayConn) Write(p []byte) (int, error) {
	if len(r.unsent) == 0 {
		return r.Conn.Write(p)
	}
	n := min(len(p), len(r.unsent))
	if !bytes.Equal(p[:n], r.unsent[:n]) {
		return 0, errors.New("sshd: x/crypto's identification line differs from the one sent")
	}
	r.unsent = r.unsent[n:]
	if n == len(p) {
		return n, nil
	}
	m, err := r.Conn.Write(p[n:])
	return n + m, err
}

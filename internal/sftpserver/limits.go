package sftpserver

import (
	"bufio"
	"encoding/binary"
	"io"
	"sync"
	"syscall"
)

// OpenSSH's limits@openssh.com extension, which pkg/sftp does not have.
// A server that announces it tells the client how large its requests may
// be; OpenSSH's sftp and scp then read and write in 255 KiB requests
// instead of 32 KiB ones, eight times fewer packets for the same file
// (and OpenSSH's own sftp-server announces it). Serve adds it around
// pkg/sftp on the byte streams: the VERSION reply gets the extension's
// name, and a limits request is answered here and never reaches pkg/sftp.
const (
	limitsExt = "limits@openssh.com"

	fxpVersion       = 2
	fxpExtended      = 200
	fxpExtendedReply = 201

	// maxRequest is the largest request pkg/sftp reads (its
	// maxMsgLength), length field excluded; OpenSSH's sftp-server has
	// the same limit.
	maxRequest = 256 << 10
	// maxData is the largest read or write a client should ask for: a
	// request's data plus its header (id, handle, offset) must fit in
	// maxRequest, and a read reply in the client's 256 KiB. OpenSSH
	// leaves 1 KiB, as here.
	maxData = maxRequest - 1024
)

// limitsReply is the EXTENDED_REPLY to a limits request with id.
func limitsReply(id uint32) []byte {
	var files uint64
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur > 5 {
		files = rl.Cur - 5 // stdin, stdout, stderr and some spare
	}
	b := make([]byte, 0, 4+1+4+4*8)
	b = binary.BigEndian.AppendUint32(b, 1+4+4*8)
	b = append(b, fxpExtendedReply)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint64(b, maxRequest) // max-packet-length
	b = binary.BigEndian.AppendUint64(b, maxData)    // max-read-length
	b = binary.BigEndian.AppendUint64(b, maxData)    // max-write-length
	b = binary.BigEndian.AppendUint64(b, files)      // max-open-handles
	return b
}

// requestReader is pkg/sftp's input: the client's packets, less the
// limits requests, which it answers through out. It reads through a
// 64 KiB buffer, so a small request costs one read(2) for several
// instead of two each (length, then body).
type requestReader struct {
	r    *bufio.Reader
	out  *replyWriter
	left int // bytes of the current packet not yet passed on
}

func newRequestReader(r io.Reader, out *replyWriter) *requestReader {
	return &requestReader{r: bufio.NewReaderSize(r, 64<<10), out: out}
}

func (q *requestReader) Read(p []byte) (int, error) {
	for q.left == 0 {
		// At a packet boundary. Every SFTP packet has at least a
		// length, a type and a uint32 (INIT's version, others' id).
		hdr, err := q.r.Peek(9)
		if err != nil {
			if len(hdr) == 0 {
				return 0, err
			}
			q.left = len(hdr) // a truncated packet: pkg/sftp reports it
			break
		}
		length := int(binary.BigEndian.Uint32(hdr))
		if hdr[4] == fxpExtended && q.out.versionSent() && q.answerLimits(length) {
			continue
		}
		q.left = 4 + length
	}
	if len(p) > q.left {
		p = p[:q.left]
	}
	n, err := q.r.Read(p)
	q.left -= n
	return n, err
}

// answerLimits answers and drops the EXTENDED packet at the head of the
// input if it is a limits request; length is its length field.
func (q *requestReader) answerLimits(length int) bool {
	const fixed = 1 + 4 + 4 + len(limitsExt) // type, id, name
	if length < fixed || length > 1024 {
		return false
	}
	b, err := q.r.Peek(4 + length)
	if err != nil {
		return false
	}
	if binary.BigEndian.Uint32(b[9:]) != uint32(len(limitsExt)) || string(b[13:13+len(limitsExt)]) != limitsExt {
		return false
	}
	id := binary.BigEndian.Uint32(b[5:])
	_, _ = q.r.Discard(4 + length)
	q.out.inject(limitsReply(id))
	return true
}

// replyWriter is pkg/sftp's output. It follows the packet boundaries
// (pkg/sftp writes a packet's header and its data in two calls) so that
// a reply of ours goes between packets, and adds limits@openssh.com to
// the VERSION packet's extensions.
type replyWriter struct {
	w        io.Writer
	mu       sync.Mutex
	boundary sync.Cond // signalled when a packet is complete
	left     int       // bytes of the current packet still to come
	head     []byte    // a packet's first bytes, until its length and type are known
	version  bool      // the VERSION packet went out
	err      error     // the first write error: the stream is broken
}

func newReplyWriter(w io.Writer) *replyWriter {
	rw := &replyWriter{w: w}
	rw.boundary.L = &rw.mu
	return rw
}

func (o *replyWriter) versionSent() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.version
}

func (o *replyWriter) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	written := 0
	for len(p) > 0 {
		if o.left == 0 {
			if len(o.head) == 0 && len(p) >= 5 && !o.version && p[4] == fxpVersion &&
				len(p) == 4+int(binary.BigEndian.Uint32(p)) {
				// The whole VERSION packet in one write, as pkg/sftp
				// sends it.
				if _, err := o.w.Write(withLimits(p)); err != nil {
					return written, err
				}
				o.version = true
				return written + len(p), nil
			}
			if len(o.head)+len(p) < 5 {
				o.head = append(o.head, p...)
				return written + len(p), nil
			}
			if len(o.head) > 0 {
				k := 5 - len(o.head)
				o.head = append(o.head, p[:k]...)
				p, written = p[k:], written+k
				o.left = 4 + int(binary.BigEndian.Uint32(o.head))
				head := o.head
				o.head = nil
				if err := o.send(head); err != nil {
					return written, err
				}
				continue
			}
			o.left = 4 + int(binary.BigEndian.Uint32(p))
		}
		n := min(len(p), o.left)
		if err := o.send(p[:n]); err != nil {
			return written, err
		}
		p, written = p[n:], written+n
	}
	return written, nil
}

// send writes part of the current packet.
func (o *replyWriter) send(b []byte) error {
	n, err := o.w.Write(b)
	o.left -= n
	if err != nil && o.err == nil {
		o.err = err
	}
	if o.left == 0 || err != nil {
		o.boundary.Broadcast()
	}
	return err
}

// inject writes a whole packet of ours between pkg/sftp's packets.
func (o *replyWriter) inject(pkt []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for (o.left != 0 || len(o.head) != 0) && o.err == nil {
		o.boundary.Wait()
	}
	if o.err != nil {
		return
	}
	if _, err := o.w.Write(pkt); err != nil {
		o.err = err
	}
}

// withLimits returns the VERSION packet v with limits@openssh.com added
// to its extensions.
func withLimits(v []byte) []byte {
	b := make([]byte, 0, len(v)+8+len(limitsExt)+1)
	b = append(b, v...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(limitsExt)))
	b = append(b, limitsExt...)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = append(b, '1')
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b
}

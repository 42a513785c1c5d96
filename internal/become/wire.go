package become

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"unicode/utf8"
)

// SockVar names the environment variable holding the socket's path in a
// shell where become works.
const SockVar = "BASTION_BECOME_SOCK"

// ToolVar names the variable bastion sets in a session that acts as a
// tool (become, user+tool), so that a nested become can say why it is
// refused.
const ToolVar = "BASTION_TOOL"

// Usage is the line a become without a tool prints, as at the SSH level.
const Usage = "usage: become TOOL [COMMAND...]"

// Frame types. The client sends Request first and then only FrameStdin,
// FrameEOF, FrameResize and FrameSignal; bastion sends FrameReply first,
// then FrameStdout and FrameStderr, and FrameExit last.
const (
	FrameRequest byte = 1
	FrameStdin   byte = 2
	FrameEOF     byte = 3
	FrameResize  byte = 4
	FrameSignal  byte = 5

	FrameReply  byte = 16
	FrameStdout byte = 17
	FrameStderr byte = 18
	FrameExit   byte = 19
)

// Size bounds, in bytes of a frame's payload.
const (
	// MaxData bounds a data frame (stdin, stdout, stderr).
	MaxData = 32 << 10
	// MaxRequest bounds the request: the command line, the tool's name
	// and TERM together.
	MaxRequest = 64 << 10
	// maxSmall bounds replies, exits and signals (one-line messages).
	maxSmall = 4 << 10
)

// version is the protocol version a Request carries.
const version = 1

// ErrFrame reports a frame that breaks the protocol (unknown type, or
// larger than its type allows).
var ErrFrame = errors.New("become: bad frame")

func maxPayload(t byte) int {
	switch t {
	case FrameRequest:
		return MaxRequest
	case FrameStdin, FrameStdout, FrameStderr:
		return MaxData
	case FrameEOF:
		return 0
	case FrameResize:
		return 4
	case FrameSignal, FrameReply, FrameExit:
		return maxSmall
	default:
		return -1
	}
}

// Conn reads and writes frames: one byte of type, four of payload length
// (big-endian), the payload. Reads are for one goroutine; writes may come
// from several.
type Conn struct {
	r   *bufio.Reader
	w   io.Writer
	buf []byte

	wmu  sync.Mutex
	wbuf []byte
}

// NewConn frames rw.
func NewConn(rw io.ReadWriter) *Conn {
	return &Conn{r: bufio.NewReaderSize(rw, 4096), w: rw}
}

// ReadFrame reads the next frame. The payload is valid until the next
// ReadFrame. A frame of an unknown type or larger than its type allows is
// ErrFrame; the stream is then unusable.
func (c *Conn) ReadFrame() (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, err
	}
	t, n := h[0], binary.BigEndian.Uint32(h[1:])
	max := maxPayload(t)
	if max < 0 {
		return 0, nil, fmt.Errorf("%w: type %d", ErrFrame, t)
	}
	if n > uint32(max) {
		return 0, nil, fmt.Errorf("%w: type %d with %d bytes (at most %d)", ErrFrame, t, n, max)
	}
	if cap(c.buf) < int(n) {
		c.buf = make([]byte, n)
	}
	p := c.buf[:n]
	if _, err := io.ReadFull(c.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return t, p, nil
}

// WriteFrame writes one frame; p must fit the type's bound.
func (c *Conn) WriteFrame(t byte, p []byte) error {
	if max := maxPayload(t); max < 0 || len(p) > max {
		return fmt.Errorf("%w: writing type %d with %d bytes", ErrFrame, t, len(p))
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(c.wbuf[:0], t, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(c.wbuf[1:], uint32(len(p)))
	c.wbuf = append(c.wbuf, p...)
	_, err := c.w.Write(c.wbuf)
	if cap(c.wbuf) > 2*(MaxData+5) {
		c.wbuf = nil // do not keep a request-sized buffer
	}
	return err
}

// Writer returns an io.Writer that sends what it is given as frames of
// type t (FrameStdin, FrameStdout or FrameStderr), MaxData at most each.
func (c *Conn) Writer(t byte) io.Writer { return &dataWriter{c: c, t: t} }

type dataWriter struct {
	c *Conn
	t byte
}

func (w *dataWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > MaxData {
			chunk = chunk[:MaxData]
		}
		if err := w.c.WriteFrame(w.t, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// Request asks for a tool's session.
type Request struct {
	Tool string
	// Command is run by the tool's shell with -c; "" is its login shell.
	Command string
	// TTY asks for a pseudo-terminal of Term and Cols×Rows.
	TTY        bool
	Term       string
	Cols, Rows uint16
}

// Marshal encodes r: version, flags, cols, rows, then tool, term and
// command as length-prefixed strings.
func (r Request) Marshal() ([]byte, error) {
	b := []byte{version, 0}
	if r.TTY {
		b[1] = 1
	}
	b = binary.BigEndian.AppendUint16(b, r.Cols)
	b = binary.BigEndian.AppendUint16(b, r.Rows)
	for _, s := range []string{r.Tool, r.Term, r.Command} {
		b = appendString(b, s)
	}
	if len(b) > MaxRequest {
		return nil, fmt.Errorf("the command is too long (%d bytes; at most %d)", len(r.Command), MaxRequest-64)
	}
	return b, nil
}

// ParseRequest decodes a FrameRequest payload.
func ParseRequest(p []byte) (Request, error) {
	var r Request
	if len(p) < 6 {
		return r, fmt.Errorf("%w: short request", ErrFrame)
	}
	if p[0] != version {
		return r, fmt.Errorf("%w: request version %d (this bastion speaks %d)", ErrFrame, p[0], version)
	}
	r.TTY = p[1]&1 != 0
	r.Cols = binary.BigEndian.Uint16(p[2:])
	r.Rows = binary.BigEndian.Uint16(p[4:])
	p = p[6:]
	var err error
	for _, s := range []*string{&r.Tool, &r.Term, &r.Command} {
		if *s, p, err = readString(p); err != nil {
			return Request{}, err
		}
	}
	if len(p) != 0 {
		return Request{}, fmt.Errorf("%w: %d trailing bytes in request", ErrFrame, len(p))
	}
	return r, nil
}

// Reply is bastion's answer to a Request.
type Reply struct {
	OK bool
	// Message is the one-line refusal when !OK.
	Message string
}

// Marshal encodes the reply.
func (r Reply) Marshal() []byte {
	b := []byte{0}
	if r.OK {
		b[0] = 1
	}
	return appendString(b, cut(r.Message))
}

// ParseReply decodes a FrameReply payload.
func ParseReply(p []byte) (Reply, error) {
	if len(p) < 1 {
		return Reply{}, fmt.Errorf("%w: empty reply", ErrFrame)
	}
	msg, rest, err := readString(p[1:])
	if err != nil || len(rest) != 0 {
		return Reply{}, fmt.Errorf("%w: bad reply", ErrFrame)
	}
	return Reply{OK: p[0] == 1, Message: msg}, nil
}

// Exit is how the tool's session ended.
type Exit struct {
	// Code is the exit status when Signal is "".
	Code int
	// Signal is the name of a killing signal without SIG ("TERM").
	Signal     string
	CoreDumped bool
	// Message is a line from bastion when it ended the session (the
	// server shut down, an internal error); Code is then 255.
	Message string
}

// Marshal encodes the exit.
func (e Exit) Marshal() []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(e.Code))
	var core byte
	if e.CoreDumped {
		core = 1
	}
	b = append(b, core)
	b = appendString(b, cut(e.Signal))
	return appendString(b, cut(e.Message))
}

// ParseExit decodes a FrameExit payload.
func ParseExit(p []byte) (Exit, error) {
	if len(p) < 5 {
		return Exit{}, fmt.Errorf("%w: short exit", ErrFrame)
	}
	e := Exit{Code: int(int32(binary.BigEndian.Uint32(p))), CoreDumped: p[4] == 1}
	var err error
	rest := p[5:]
	if e.Signal, rest, err = readString(rest); err != nil {
		return Exit{}, err
	}
	if e.Message, rest, err = readString(rest); err != nil || len(rest) != 0 {
		return Exit{}, fmt.Errorf("%w: bad exit", ErrFrame)
	}
	return e, nil
}

// Resize encodes a window size for FrameResize.
func Resize(cols, rows uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, cols), rows)
}

// ParseResize decodes a FrameResize payload.
func ParseResize(p []byte) (cols, rows uint16, err error) {
	if len(p) != 4 {
		return 0, 0, fmt.Errorf("%w: resize of %d bytes", ErrFrame, len(p))
	}
	return binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:]), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func readString(p []byte) (string, []byte, error) {
	if len(p) < 4 {
		return "", nil, fmt.Errorf("%w: short string", ErrFrame)
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-4) {
		return "", nil, fmt.Errorf("%w: string of %d bytes in %d", ErrFrame, n, len(p)-4)
	}
	return string(p[4 : 4+n]), p[4+n:], nil
}

// cut keeps a one-line message within a small frame, at a UTF-8
// boundary (internal/clip would link log/slog into the helper).
func cut(s string) string {
	n := maxSmall - 64
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

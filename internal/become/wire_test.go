package become

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// rw is an in-memory stream: writes append to buf, reads consume it.
type rw struct{ bytes.Buffer }

func TestRequestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{Tool: "mytool"},
		{Tool: "mytool", Command: "id -u; echo $USER", TTY: true, Term: "xterm-256color", Cols: 132, Rows: 43},
		{Tool: "t", Command: strings.Repeat("x", MaxRequest-64)},
	} {
		p, err := r.Marshal()
		if err != nil {
			t.Fatalf("marshal %+v: %v", r, err)
		}
		var s rw
		c := NewConn(&s)
		if err := c.WriteFrame(FrameRequest, p); err != nil {
			t.Fatal(err)
		}
		typ, got, err := c.ReadFrame()
		if err != nil || typ != FrameRequest {
			t.Fatalf("read: %d %v", typ, err)
		}
		back, err := ParseRequest(got)
		if err != nil || back != r {
			t.Errorf("round trip of %.80v: %.80v, %v", r, back, err)
		}
	}
}

func TestRequestTooLong(t *testing.T) {
	_, err := Request{Tool: "t", Command: strings.Repeat("x", MaxRequest)}.Marshal()
	if err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("a command over MaxRequest: %v", err)
	}
}

func TestReplyExitResizeRoundTrip(t *testing.T) {
	for _, r := range []Reply{{OK: true}, {Message: "alice is not a maintainer of tool othertool"}} {
		back, err := ParseReply(r.Marshal())
		if err != nil || back != r {
			t.Errorf("reply %+v: %+v, %v", r, back, err)
		}
	}
	for _, e := range []Exit{{Code: 3}, {Signal: "TERM", CoreDumped: true}, {Code: 255, Message: "the server shut down"}, {Code: -1}} {
		back, err := ParseExit(e.Marshal())
		if err != nil || back != e {
			t.Errorf("exit %+v: %+v, %v", e, back, err)
		}
	}
	cols, rows, err := ParseResize(Resize(200, 50))
	if err != nil || cols != 200 || rows != 50 {
		t.Errorf("resize: %d×%d %v", cols, rows, err)
	}
	// A long message is cut to fit its frame.
	long := Reply{Message: strings.Repeat("é", 5000)}
	if p := long.Marshal(); len(p) > maxSmall {
		t.Errorf("a long reply is %d bytes, more than %d", len(p), maxSmall)
	}
}

func TestBadFrames(t *testing.T) {
	frame := func(typ byte, n uint32, payload []byte) []byte {
		b := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return append(b, payload...)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"unknown type", frame(99, 0, nil), ErrFrame},
		{"stdin over MaxData", frame(FrameStdin, MaxData+1, nil), ErrFrame},
		{"request over MaxRequest", frame(FrameRequest, MaxRequest+1, nil), ErrFrame},
		{"huge length", frame(FrameStdout, 0xffffffff, nil), ErrFrame},
		{"resize of 5 bytes", frame(FrameResize, 5, make([]byte, 5)), ErrFrame},
		{"eof with payload", frame(FrameEOF, 1, []byte{0}), ErrFrame},
		{"cut short", frame(FrameStdin, 10, []byte("abc")), io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s rw
			s.Write(tc.in)
			_, _, err := NewConn(&s).ReadFrame()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if err := NewConn(&rw{}).WriteFrame(FrameStdin, make([]byte, MaxData+1)); !errors.Is(err, ErrFrame) {
		t.Errorf("writing an oversized frame: %v", err)
	}
}

func TestParseRequestMalformed(t *testing.T) {
	good, _ := Request{Tool: "mytool", Command: "id"}.Marshal()
	for _, tc := range []struct {
		name string
		p    []byte
	}{
		{"empty", nil},
		{"short", good[:5]},
		{"other version", append([]byte{2}, good[1:]...)},
		{"string longer than the frame", append(append([]byte{}, good[:6]...), 0xff, 0xff, 0xff, 0xff, 'x')},
		{"trailing bytes", append(append([]byte{}, good...), 0)},
		{"missing command", good[:len(good)-6]},
	} {
		if _, err := ParseRequest(tc.p); !errors.Is(err, ErrFrame) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestWriterSplits(t *testing.T) {
	var s rw
	c := NewConn(&s)
	data := bytes.Repeat([]byte("0123456789"), (2*MaxData+100)/10)
	n, err := c.Writer(FrameStdout).Write(data)
	if err != nil || n != len(data) {
		t.Fatalf("write: %d %v", n, err)
	}
	var got []byte
	frames := 0
	for {
		typ, p, err := c.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil || typ != FrameStdout || len(p) > MaxData {
			t.Fatalf("frame %d: type %d, %d bytes, %v", frames, typ, len(p), err)
		}
		frames++
		got = append(got, p...)
	}
	if frames != 3 || !bytes.Equal(got, data) {
		t.Fatalf("%d frames, %d bytes back of %d", frames, len(got), len(data))
	}
}

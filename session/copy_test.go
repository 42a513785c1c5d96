package session

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// chunkReader returns its data in the given chunk sizes.
type chunkReader struct {
	data   []byte
	chunks []int
	sizes  []int // len(p) of every Read call
}

func (c *chunkReader) Read(p []byte) (int, error) {
	c.sizes = append(c.sizes, len(p))
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.chunks) > 0 {
		n = min(n, c.chunks[0])
		c.chunks = c.chunks[1:]
	}
	n = min(n, len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

func TestCopy(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("0123456789"), 100000)
	tests := []struct {
		name   string
		chunks []int
		// wantSizes checks the buffer sizes offered to Read.
		wantSizes []int
	}{
		{"keystrokes stay small", []int{1, 1, 1}, []int{512, 512, 512}},
		{"bulk switches to big", []int{512, 32 * 1024, 32 * 1024, 100}, []int{512, bigBuf, bigBuf, bigBuf, 512}},
		{"short bulk reads stay big", []int{512, 64 * 1024, 8 * 1024, 64 * 1024, 512, 1}, []int{512, bigBuf, bigBuf, bigBuf, bigBuf, 512}},
	}
	for _, tt := range tests {
		src := &chunkReader{data: data[:sum(tt.chunks)], chunks: tt.chunks}
		var dst bytes.Buffer
		var counted int
		n, err := Copy(&dst, src, func(k int) { counted += k })
		if err != nil || n != int64(sum(tt.chunks)) || counted != int(n) || !bytes.Equal(dst.Bytes(), data[:n]) {
			t.Errorf("%s: n %d err %v counted %d", tt.name, n, err, counted)
		}
		if len(src.sizes) < len(tt.wantSizes) {
			t.Fatalf("%s: reads %v", tt.name, src.sizes)
		}
		for i, w := range tt.wantSizes {
			if src.sizes[i] != w {
				t.Errorf("%s: read %d offered %d bytes, want %d (all: %v)", tt.name, i, src.sizes[i], w, src.sizes)
			}
		}
	}
	// Whole streams survive odd readers.
	for _, r := range []io.Reader{iotest.OneByteReader(bytes.NewReader(data)), iotest.HalfReader(bytes.NewReader(data)), iotest.DataErrReader(bytes.NewReader(data))} {
		var dst bytes.Buffer
		if n, err := Copy(&dst, r, nil); err != nil || !bytes.Equal(dst.Bytes(), data) {
			t.Errorf("copy: n %d err %v", n, err)
		}
	}
	boom := errors.New("boom")
	if _, err := Copy(io.Discard, iotest.ErrReader(boom), nil); !errors.Is(err, boom) {
		t.Errorf("read error not returned: %v", err)
	}
}

func sum(xs []int) int {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s
}

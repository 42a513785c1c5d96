package session

import (
	"io"
	"sync"
)

// smallBuf is what a copier holds while it waits for input: idle
// sessions are the common case, and a big buffer held in a blocked Read
// would cost 32 KiB per idle stream.
const smallBuf = 512

var bigBufs = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

// Copy copies src to dst until either fails or src ends, and returns the
// bytes written. It reads into a small buffer while the stream trickles
// and borrows a pooled 32 KiB buffer while reads keep filling it, so an
// idle stream holds 512 bytes and a busy one copies in large chunks.
// onData, if not nil, is called with each chunk's size after it is
// written (for byte counters and idle timers).
func Copy(dst io.Writer, src io.Reader, onData func(n int)) (int64, error) {
	small := make([]byte, smallBuf)
	var total int64
	buf := small
	var big *[]byte
	defer func() {
		if big != nil {
			bigBufs.Put(big)
		}
	}()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if onData != nil {
				onData(w)
			}
			if werr != nil {
				return total, werr
			}
			if w < n {
				return total, io.ErrShortWrite
			}
		}
		if err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		switch {
		case n == len(buf) && big == nil:
			big = bigBufs.Get().(*[]byte)
			buf = *big
		case n < len(buf) && big != nil:
			bigBufs.Put(big)
			big = nil
			buf = small
		}
	}
}

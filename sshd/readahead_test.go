//go:build linux

package sshd

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair is a loopback TCP connection: the server's end wrapped in a
// readAheadConn, and the client's.
func tcpPair(t *testing.T) (*readAheadConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	ra, ok := withReadAhead(server).(*readAheadConn)
	if !ok {
		t.Fatal("withReadAhead did not wrap a TCP connection")
	}
	return ra, client
}

// Reads of every size x/crypto makes (4 KiB fills, packet remainders,
// short reads) return the stream as sent, and the end of it.
func TestReadAheadStream(t *testing.T) {
	t.Parallel()
	ra, client := tcpPair(t)
	data := make([]byte, 3<<20+517)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	go func() {
		for p := data; len(p) > 0; {
			n := min(len(p), 1+len(p)%70000)
			if _, err := client.Write(p[:n]); err != nil {
				return
			}
			p = p[n:]
		}
		client.Close()
	}()
	var got []byte
	sizes := []int{4096, 28 << 10, 5, 4096, 100 << 10, 1, 4096}
	for i := 0; ; i++ {
		buf := make([]byte, sizes[i%len(sizes)])
		n, err := ra.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, differing from the %d sent", len(got), len(data))
	}
	if ra.buf != nil {
		t.Error("a drained connection still holds its read-ahead buffer")
	}
}

// Small packets (an interactive session) are read straight into the
// caller's buffer, with no read-ahead buffer taken; a large read takes
// what the socket holds; once drained, the buffer goes back and the next
// read waits as a plain one would.
func TestReadAheadOnlyWhileBusy(t *testing.T) {
	t.Parallel()
	ra, client := tcpPair(t)
	buf := make([]byte, 4096)
	if _, err := client.Write([]byte("keystroke")); err != nil {
		t.Fatal(err)
	}
	if n, err := ra.Read(buf); err != nil || string(buf[:n]) != "keystroke" || ra.buf != nil || ra.busy {
		t.Fatalf("small read: %q, %v; buffer held %v, busy %v", buf[:n], err, ra.buf != nil, ra.busy)
	}
	bulk := bytes.Repeat([]byte("x"), 200<<10)
	if _, err := client.Write(bulk); err != nil {
		t.Fatal(err)
	}
	// Wait until the kernel holds more than one read's worth; one
	// read-ahead then takes all it holds (up to its size).
	queued := 0
	for deadline := time.Now().Add(5 * time.Second); queued < 64<<10 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		_ = ra.raw.Control(func(fd uintptr) { queued = inq(int(fd)) })
	}
	big := make([]byte, 32<<10)
	n, err := ra.Read(big)
	if err != nil || n != len(big) || ra.buf == nil || len(ra.data) < queued-len(big) {
		t.Fatalf("large read: %d, %v; buffered %d, want at least %d", n, err, len(ra.data), queued-len(big))
	}
	for rest := len(bulk) - n; rest > 0; rest -= n {
		if n, err = ra.Read(big); err != nil {
			t.Fatal(err)
		}
	}
	if ra.buf != nil {
		t.Fatal("the drained buffer was not given back")
	}
	done := make(chan struct{})
	go func() {
		n, err = ra.Read(big)
		close(done)
	}()
	select {
	case <-done:
		t.Fatalf("a read with nothing sent returned %d, %v", n, err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := client.Write([]byte("later")); err != nil {
		t.Fatal(err)
	}
	<-done
	if err != nil || string(big[:n]) != "later" {
		t.Fatalf("read after waiting: %q, %v", big[:n], err)
	}
}

// inq is how many bytes wait in a socket's receive queue.
func inq(fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return -1
	}
	return n
}

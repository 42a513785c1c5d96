package sftpserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// OpenSSH's client sizes its requests from limits@openssh.com: 255 KiB
// reads and writes, as against OpenSSH's own sftp-server, instead of the
// 32 KiB it uses when a server does not announce the extension.
func TestOpenSSHClientUsesLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := make([]byte, 3<<20+77)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "src"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := sftpClient(t, dir, "put src up\nget up down\n", []string{"-vvv"})
	if err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	if !strings.Contains(out, "using 261120 / 261120") {
		t.Errorf("the client did not take 255 KiB requests from limits@openssh.com:\n%s", grepLines(out, "limits", "buffer sizes"))
	}
	if got, err := os.ReadFile(filepath.Join(dir, "down")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip with 255 KiB requests differs (read err %v, %d bytes of %d)", err, len(got), len(data))
	}
}

func grepLines(s string, words ...string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				b.WriteString(l + "\n")
				break
			}
		}
	}
	return b.String()
}

// The wire: VERSION lists the extension, a limits request gets
// OpenSSH's values, and the requests after it still reach pkg/sftp.
func TestLimitsOnTheWire(t *testing.T) {
	t.Parallel()
	cin, sin := io.Pipe()
	sout, cout := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), cin, cout, Options{Dir: t.TempDir()}) }()

	send := func(typ byte, body []byte) {
		t.Helper()
		pkt := binary.BigEndian.AppendUint32(nil, uint32(1+len(body)))
		pkt = append(append(pkt, typ), body...)
		if _, err := sin.Write(pkt); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() (byte, []byte) {
		t.Helper()
		var l [4]byte
		if _, err := io.ReadFull(sout, l[:]); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, binary.BigEndian.Uint32(l[:]))
		if _, err := io.ReadFull(sout, b); err != nil {
			t.Fatal(err)
		}
		return b[0], b[1:]
	}
	str := func(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }

	send(1, binary.BigEndian.AppendUint32(nil, 3)) // INIT, version 3
	typ, v := recv()
	if typ != fxpVersion || !bytes.Contains(v, append(str(limitsExt), str("1")...)) {
		t.Fatalf("VERSION (type %d) does not list %s 1: %q", typ, limitsExt, v)
	}
	send(fxpExtended, append(binary.BigEndian.AppendUint32(nil, 7), str(limitsExt)...))
	typ, r := recv()
	if typ != fxpExtendedReply || len(r) != 4+4*8 || binary.BigEndian.Uint32(r) != 7 {
		t.Fatalf("limits reply: type %d, %x", typ, r)
	}
	if p, rd, wr := binary.BigEndian.Uint64(r[4:]), binary.BigEndian.Uint64(r[12:]), binary.BigEndian.Uint64(r[20:]); p != 256<<10 || rd != 255<<10 || wr != 255<<10 {
		t.Errorf("limits: packet %d, read %d, write %d; want OpenSSH's 262144, 261120, 261120", p, rd, wr)
	}
	// An ordinary request after the dropped one: REALPATH "." answered
	// by pkg/sftp with its id.
	send(16, append(binary.BigEndian.AppendUint32(nil, 8), str(".")...))
	if typ, b := recv(); typ != 104 || binary.BigEndian.Uint32(b) != 8 {
		t.Fatalf("REALPATH after limits: type %d, %x", typ, b)
	}
	// Other extended requests are still pkg/sftp's (it answers an unknown
	// one with a STATUS).
	send(fxpExtended, append(binary.BigEndian.AppendUint32(nil, 9), str("nonesuch@example.com")...))
	if typ, b := recv(); typ != 101 || binary.BigEndian.Uint32(b) != 9 {
		t.Fatalf("unknown extension: type %d, %x", typ, b)
	}
	sin.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A reply of ours never goes between the two writes of one pkg/sftp
// packet (its header, then its data).
func TestInjectWaitsForPacketEnd(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	w := newReplyWriter(&out)
	data := bytes.Repeat([]byte{'d'}, 100)
	hdr := binary.BigEndian.AppendUint32(nil, uint32(1+4+4+len(data)))
	hdr = append(hdr, 103, 0, 0, 0, 1, 0, 0, 0, byte(len(data))) // DATA, id 1
	if _, err := w.Write(hdr); err != nil {
		t.Fatal(err)
	}
	injected := make(chan struct{})
	ours := limitsReply(2)
	go func() { w.inject(ours); close(injected) }()
	select {
	case <-injected:
		t.Fatal("inject wrote in the middle of a packet")
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	<-injected
	want := append(append(append([]byte{}, hdr...), data...), ours...)
	if got := out.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("output\n%x\nwant\n%x", got, want)
	}
}

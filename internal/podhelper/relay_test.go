package podhelper

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testSecret = "0123456789abcdef0123456789abcdef"

// startRelay runs Relay on pipes and returns its control streams.
func startRelay(t *testing.T, args ...string) (ctl io.WriteCloser, out *bufio.Reader, done <-chan error) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ch := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		err := Relay(context.Background(), args, inR, outW)
		outW.Close()
		ch <- err
	}()
	t.Cleanup(func() {
		inW.Close()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Error("relay did not end when its stdin closed")
		}
		inR.Close()
	})
	if _, err := io.WriteString(inW, "secret "+testSecret+"\n"); err != nil {
		t.Fatal(err)
	}
	return inW, bufio.NewReader(outR), ch
}

func expectLine(t *testing.T, r *bufio.Reader, prefix string) []string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, prefix) {
		t.Fatalf("control line %q (%v), want %q...", line, err, prefix)
	}
	return strings.Fields(line)
}

// claim connects to the rendezvous port as bastion does.
func claim(t *testing.T, port, secret, id string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "%s %s\n", secret, id); err != nil {
		t.Fatal(err)
	}
	return c
}

func echoVia(t *testing.T, client, bastion net.Conn) {
	t.Helper()
	_ = client.SetDeadline(time.Now().Add(10 * time.Second))
	_ = bastion.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(client, "to-bastion\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(bastion).ReadString('\n')
	if err != nil || line != "to-bastion\n" {
		t.Fatalf("bastion read %q %v", line, err)
	}
	if _, err := io.WriteString(bastion, "to-client\n"); err != nil {
		t.Fatal(err)
	}
	line, err = bufio.NewReader(client).ReadString('\n')
	if err != nil || line != "to-client\n" {
		t.Fatalf("client read %q %v", line, err)
	}
}

func TestRelayUnix(t *testing.T) {
	ctl, out, _ := startRelay(t, "unix")
	f := expectLine(t, out, "listening ")
	path, port := f[1], f[2]
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %s: %v %v", path, st.Mode(), err)
	}
	if dst, err := os.Stat(filepath.Dir(path)); err != nil || dst.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory: %v %v", dst.Mode(), err)
	}
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	f = expectLine(t, out, "accepted ")
	if f[1] != "1" || f[2] != "-" {
		t.Fatalf("accepted line %v", f)
	}
	// A wrong secret gets nothing, and does not use up the connection.
	bad := claim(t, port, strings.Repeat("f", 32), "1")
	_ = bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := bad.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a wrong secret read %d bytes", n)
	}
	bad.Close()
	b := claim(t, port, testSecret, "1")
	defer b.Close()
	echoVia(t, client, b)
	// Pings keep it alive; the end of stdin ends it and removes the socket.
	if _, err := io.WriteString(ctl, "ping\n"); err != nil {
		t.Fatal(err)
	}
	ctl.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Dir(path)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("socket directory left after the relay ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The relayed connection ended with it.
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Error("relayed connection still open after the relay ended")
	}
}

func TestRelayTCP(t *testing.T) {
	_, out, _ := startRelay(t, "tcp", "127.0.0.1:0")
	f := expectLine(t, out, "listening ")
	addr, port := f[1], f[2]
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("listening on %s: want the real port", addr)
	}
	client, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	f = expectLine(t, out, "accepted ")
	if f[2] != client.LocalAddr().String() {
		t.Errorf("origin %s, want %s", f[2], client.LocalAddr())
	}
	b := claim(t, port, testSecret, f[1])
	defer b.Close()
	echoVia(t, client, b)
}

func TestRelayRefusals(t *testing.T) {
	for _, args := range [][]string{{"tcp", "0.0.0.0:0"}, {"tcp", "10.1.2.3:0"}, {"unix", "/tmp/x"}, {"udp"}} {
		_, out, done := startRelay(t, args...)
		expectLine(t, out, "error ")
		if err := <-done; err == nil {
			t.Errorf("relay %v: no error", args)
		}
	}
}

// TestRelayUnixPath: with the path bastion chose, the relay makes the
// directory itself, 0700, listens there, and refuses a directory that
// exists already (somebody else's, made to read the connections).
func TestRelayUnixPath(t *testing.T) {
	parent := t.TempDir()
	path := filepath.Join(parent, RelayDirPrefix+"0123456789abcdef0123", RelaySocketName)
	_, out, _ := startRelay(t, "unix", path)
	f := expectLine(t, out, "listening ")
	if f[1] != path {
		t.Fatalf("listening on %s, want %s", f[1], path)
	}
	if dst, err := os.Stat(filepath.Dir(path)); err != nil || dst.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory: %v %v", dst.Mode(), err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	expectLine(t, out, "accepted ")

	taken := filepath.Join(parent, RelayDirPrefix+"fedcba9876543210fedc")
	if err := os.Mkdir(taken, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		filepath.Join(taken, RelaySocketName),                                // exists
		filepath.Join(parent, RelayDirPrefix+"short", RelaySocketName),       // no token
		filepath.Join(parent, "other-0123456789abcdef0123", RelaySocketName), // not ours
		filepath.Join(parent, RelayDirPrefix+"0123456789abcdef0124", "x.sock"),
		RelayDirPrefix + "0123456789abcdef0125/" + RelaySocketName, // relative
	} {
		_, out, done := startRelay(t, "unix", p)
		expectLine(t, out, "error ")
		if err := <-done; err == nil {
			t.Errorf("relay unix %s: no error", p)
		}
	}
	if ents, _ := os.ReadDir(taken); len(ents) != 0 {
		t.Errorf("the relay wrote into a directory it did not make: %v", ents)
	}
}

package local

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// TestPTYOutputBursts: the pty's output is copied by a goroutine only
// while there is output (ptyOutput); quiet gaps between bursts, a burst
// larger than the copy buffer and the output just before the exit all
// arrive, in order.
func TestPTYOutputBursts(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(me.Uid)
	gid, _ := strconv.Atoi(me.Gid)
	b := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer b.Close()
	var out lockedBuf
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	st, err := b.Run(context.Background(), session.Request{
		Account: auth.Account{Name: me.Username, UID: uid, GID: gid, Home: t.TempDir(), Shell: "/bin/sh"},
		Command: `stty -onlcr; printf a; sleep 0.2; printf b; sleep 0.2; head -c 300000 /dev/zero | tr '\0' x; sleep 0.1; printf c`,
		TTY:     &session.TTY{Term: "xterm", Size: session.WindowSize{Cols: 80, Rows: 24}},
		Stdin:   stdinR,
		Stdout:  &out,
	})
	if err != nil || st.Code != 0 {
		t.Fatalf("run: %v, %+v", err, st)
	}
	want := "ab" + strings.Repeat("x", 300000) + "c"
	if got := out.b.String(); got != want {
		t.Fatalf("got %d bytes (%.20q...), want %d", len(got), got, len(want))
	}
	b.exits.mu.Lock()
	left := len(b.exits.waiters)
	b.exits.mu.Unlock()
	if left != 0 {
		t.Errorf("%d descriptors still watched after the session", left)
	}
}

// TestWatchAccept: a listener's waiting connections are announced once
// per arming, and every one of them can be accepted.
func TestWatchAccept(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(me.Uid)
	gid, _ := strconv.Atoi(me.Gid)
	b := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer b.Close()
	l, err := b.Listen(context.Background(), session.Request{Account: auth.Account{Name: me.Username, UID: uid, GID: gid}}, "unix", "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	aw, ok := l.(session.AcceptWatcher)
	if !ok {
		t.Fatal("the local backend's listener is not a session.AcceptWatcher")
	}
	ready := make(chan struct{}, 8)
	arm, stop, err := aw.WatchAccept(func() { ready <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	select {
	case <-ready:
		t.Fatal("ready before anybody connected")
	case <-time.After(50 * time.Millisecond):
	}
	for range 2 {
		c, err := net.Dial("unix", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	for i := range 2 {
		select {
		case <-ready:
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d: no readiness", i)
		}
		nc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
		select {
		case <-ready:
			t.Fatal("ready again without arm")
		case <-time.After(50 * time.Millisecond):
		}
		if err := arm(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-ready:
		t.Fatal("ready with nobody waiting")
	case <-time.After(50 * time.Millisecond):
	}
}

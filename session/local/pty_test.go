package local

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"testing"

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

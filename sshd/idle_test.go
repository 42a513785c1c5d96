package sshd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// serverGoroutines counts the goroutines the test's fixture runs (its
// Serve goroutine carries the pprof label fixture=<test name>, and every
// goroutine started below it inherits it; the clients' do not).
func serverGoroutines(t testing.TB) (n int, stacks string) {
	label, _ := json.Marshal(map[string]string{"fixture": t.Name()})
	t.Helper()
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
		t.Fatal(err)
	}
	count := regexp.MustCompile(`^(\d+) @`)
	var sb strings.Builder
	var cur int
	var block []string
	flush := func() {
		for _, l := range block {
			if strings.Contains(l, "# labels: "+string(label)) {
				n += cur
				sb.WriteString(strings.Join(block, "\n") + "\n\n")
				break
			}
		}
		block, cur = nil, 0
	}
	sc := bufio.NewScanner(&buf)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if m := count.FindStringSubmatch(l); m != nil {
			flush()
			cur, _ = strconv.Atoi(m[1])
		}
		block = append(block, l)
	}
	flush()
	return n, sb.String()
}

// TestIdleShellGoroutines bounds what an idle interactive session costs
// the server in goroutines (each one parks a stack of 2–8 KiB for as long
// as the session lasts): x/crypto's three per connection (readLoop,
// kexLoop, mux.loop), and bastion's own, which must stay at most
// maxOwn per connection with one pty shell: the connection's loop (which
// also serves the session's requests) and the stdin copier. The pty's
// output and the become socket's connections get a goroutine only while
// there is something to do (session/local's ptyOutput,
// session.AcceptWatcher), and nothing waits for the process (the local
// backend is a session.Starter).
func TestIdleShellGoroutines(t *testing.T) {
	const sessions = 20
	const maxOwn = 2
	f := newFixture(t, nil)
	// A first session starts what all share (the backend's exit watcher).
	warm := f.dial(t, f.user)
	if s, err := warm.NewSession(); err != nil {
		t.Fatal(err)
	} else if err := s.Run("true"); err != nil {
		t.Fatal(err)
	}
	warm.Close()
	time.Sleep(100 * time.Millisecond)
	base, _ := serverGoroutines(t)
	var clients []*ssh.Client
	var inputs []*io.PipeWriter
	var copies sync.WaitGroup
	defer func() {
		for _, w := range inputs {
			w.Close()
		}
		for _, c := range clients {
			c.Close()
		}
		copies.Wait()
	}()
	for range sessions {
		c := f.dial(t, f.user)
		clients = append(clients, c)
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		stdinR, stdinW := io.Pipe()
		inputs = append(inputs, stdinW)
		s.Stdin = stdinR
		out, _ := s.StdoutPipe()
		if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
			t.Fatal(err)
		}
		if err := s.Shell(); err != nil {
			t.Fatal(err)
		}
		if _, err := out.Read(make([]byte, 64)); err != nil { // the prompt
			t.Fatal(err)
		}
		copies.Add(1)
		go func() {
			defer copies.Done()
			_, _ = io.Copy(io.Discard, out)
		}()
	}
	var n int
	var stacks string
	for deadline := time.Now().Add(5 * time.Second); ; {
		runtime.Gosched()
		n, stacks = serverGoroutines(t)
		per := float64(n-base) / sessions
		if per <= 3+maxOwn || time.Now().After(deadline) {
			t.Logf("%.2f server goroutines per idle pty shell (%d for %d sessions over a base of %d)", per, n-base, sessions, base)
			if per > 3+maxOwn {
				t.Fatalf("an idle pty shell costs %.1f server goroutines, want at most %d (x/crypto's 3 and %d of bastion's); goroutines:\n%s", per, 3+maxOwn, maxOwn, stacks)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

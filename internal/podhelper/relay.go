package podhelper

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The relay: `bastion-helper relay tcp HOST:PORT`, `relay unix` or
// `relay unix /tmp/bastion-ssh-TOKEN/agent.sock` listens
// in the pod on bastion's behalf (ssh -R, agent forwarding) and hands
// each accepted connection to bastion through the API server.
//
// Control protocol, one line each way at a time on the exec's stdin and
// stdout (every line at most MaxRelayLine bytes):
//
//	bastion → relay   "secret HEX"                 first line: the relay's secret
//	relay → bastion   "listening ADDRESS PORT"     listening on ADDRESS (a socket path, or
//	                                               host:port with the real port); PORT is the
//	                                               rendezvous port on 127.0.0.1
//	relay → bastion   "error MESSAGE"              could not listen; the relay exits
//	relay → bastion   "accepted ID ORIGIN"         a connection waits as ID (ORIGIN: its
//	                                               peer's host:port, or "-")
//	bastion → relay   "ping"                       at least every RelayPingInterval
//
// For each accepted ID, bastion opens a port-forward to the rendezvous
// port and writes "HEX ID\n"; the relay checks the secret and splices the
// two connections. The relay exits, closing its listeners, removing the
// socket and ending every relayed connection, when its stdin ends or no
// line came for RelayLiveness (bastion went away without closing the
// exec: closing an exec stream does not end the process in the pod).

// MaxRelayLine bounds a control or rendezvous line.
const MaxRelayLine = 512

// RelayPingInterval is how often bastion pings; RelayLiveness is how long
// the relay waits for a line before it gives up on bastion.
const (
	RelayPingInterval = 15 * time.Second
	RelayLiveness     = 4 * RelayPingInterval
)

// maxPending bounds the accepted connections waiting for bastion; more
// are closed at once. pendingTimeout is how long one waits.
const (
	maxPending     = 32
	pendingTimeout = 30 * time.Second
	rendezvousWait = 10 * time.Second
)

// RelaySocketName is the socket's name in its private directory;
// RelayDirPrefix begins the directory's name.
const (
	RelaySocketName = "agent.sock"
	RelayDirPrefix  = "bastion-ssh-"
)

// With a socket path (bastion chose it, so that it knows the address
// before the relay runs), the relay makes the directory itself, mode
// 0700, and fails if it exists.

// Relay runs the relay for args ("tcp HOST:PORT", "unix" or "unix PATH") on stdin and
// stdout until stdin ends or ctx is cancelled.
func Relay(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := bufio.NewReaderSize(stdin, MaxRelayLine)
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() { // ends when stdin ends; the process exits with Relay
		for {
			line, err := readLine(in)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case lines <- line:
			case <-ctx.Done():
				return
			}
		}
	}()
	var secret string
	select {
	case line := <-lines:
		var ok bool
		if secret, ok = strings.CutPrefix(line, "secret "); !ok || len(secret) < 32 {
			return errors.New("relay: the first line must be the secret")
		}
	case err := <-readErr:
		return fmt.Errorf("relay: read secret: %w", err)
	case <-time.After(RelayLiveness):
		return errors.New("relay: no secret")
	}

	r := &relay{secret: secret, out: stdout, pending: map[uint64]*pendingConn{}, active: map[net.Conn]struct{}{}}
	target, cleanup, err := listenTarget(args)
	if err != nil {
		r.send("error " + oneLine(err.Error()))
		return err
	}
	defer cleanup()
	rv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		target.Close()
		r.send("error " + oneLine(err.Error()))
		return fmt.Errorf("relay: rendezvous: %w", err)
	}
	var wg sync.WaitGroup
	defer func() {
		target.Close()
		rv.Close()
		r.closeAll()
		wg.Wait()
	}()
	addr := target.Addr().String()
	if !r.send(fmt.Sprintf("listening %s %d", addr, rv.Addr().(*net.TCPAddr).Port)) {
		return errors.New("relay: stdout closed")
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.acceptTarget(ctx, target)
	}()
	go func() {
		defer wg.Done()
		r.acceptRendezvous(rv, &wg)
	}()

	live := time.NewTimer(RelayLiveness)
	defer live.Stop()
	for {
		select {
		case <-lines:
			live.Reset(RelayLiveness)
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("relay: read: %w", err)
		case <-live.C:
			return errors.New("relay: bastion went silent")
		case <-ctx.Done():
			return nil
		}
	}
}

// readLine reads one line of at most MaxRelayLine bytes.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", errors.New("line too long")
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// listenTarget listens where args say: "tcp HOST:PORT" on a loopback
// address, "unix" on a fresh socket in a private directory, or "unix
// PATH" on PATH in a directory that it makes.
func listenTarget(args []string) (net.Listener, func(), error) {
	nop := func() {}
	switch {
	case len(args) == 2 && args[0] == "tcp":
		host, port, err := net.SplitHostPort(args[1])
		if err != nil {
			return nil, nop, fmt.Errorf("listen %q: %w", args[1], err)
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return nil, nop, fmt.Errorf("listen %q: not a loopback address", args[1])
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), port))
		if err != nil {
			return nil, nop, fmt.Errorf("listen: %w", err)
		}
		return l, nop, nil
	case len(args) == 1 && args[0] == "unix":
		dir, err := os.MkdirTemp("", RelayDirPrefix)
		if err != nil {
			return nil, nop, fmt.Errorf("listen: %w", err)
		}
		return listenUnix(dir)
	case len(args) == 2 && args[0] == "unix":
		dir, err := relayDir(args[1])
		if err != nil {
			return nil, nop, err
		}
		// Mkdir fails when the directory exists: one made by anybody
		// else (to read the socket's connections) is never used.
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, nop, fmt.Errorf("listen: %w", err)
		}
		return listenUnix(dir)
	default:
		return nil, nop, errors.New("usage: relay tcp HOST:PORT | relay unix [PATH]")
	}
}

// relayDir checks a socket path bastion chose ("DIR/agent.sock", DIR a
// fresh RelayDirPrefix directory in an existing directory) and returns
// DIR.
func relayDir(path string) (string, error) {
	dir, name := filepath.Split(path)
	dir = filepath.Clean(dir)
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || name != RelaySocketName ||
		!strings.HasPrefix(filepath.Base(dir), RelayDirPrefix) || len(filepath.Base(dir)) < len(RelayDirPrefix)+16 {
		return "", fmt.Errorf("listen %q: not a DIR/%s path with a fresh %sTOKEN directory", path, RelaySocketName, RelayDirPrefix)
	}
	return dir, nil
}

// listenUnix listens on the socket in dir, a directory the relay just
// made, which it removes when the listener is done.
func listenUnix(dir string) (net.Listener, func(), error) {
	nop := func() {}
	cleanup := func() { _ = os.RemoveAll(dir) }
	// Exactly 0700: a pod's /tmp with an fsGroup is setgid, and the
	// directory would inherit that bit.
	if err := os.Chmod(dir, 0o700); err != nil {
		cleanup()
		return nil, nop, fmt.Errorf("listen: %w", err)
	}
	path := filepath.Join(dir, RelaySocketName)
	l, err := net.Listen("unix", path)
	if err == nil {
		err = os.Chmod(path, 0o600)
		if err != nil {
			l.Close()
		}
	}
	if err != nil {
		cleanup()
		return nil, nop, fmt.Errorf("listen: %w", err)
	}
	return l, cleanup, nil
}

type pendingConn struct {
	c     net.Conn
	timer *time.Timer
}

type relay struct {
	secret string

	outMu sync.Mutex
	out   io.Writer

	mu      sync.Mutex
	closed  bool
	nextID  uint64
	pending map[uint64]*pendingConn
	active  map[net.Conn]struct{}
}

// send writes one control line; false when stdout is gone.
func (r *relay) send(line string) bool {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	_, err := io.WriteString(r.out, line+"\n")
	return err == nil
}

// acceptTarget accepts the listener's connections and announces each.
func (r *relay) acceptTarget(ctx context.Context, l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return
		}
		r.mu.Lock()
		if r.closed || len(r.pending) >= maxPending {
			r.mu.Unlock()
			c.Close()
			continue
		}
		r.nextID++
		id := r.nextID
		p := &pendingConn{c: c}
		p.timer = time.AfterFunc(pendingTimeout, func() {
			if r.take(id) != nil {
				c.Close()
			}
		})
		r.pending[id] = p
		r.mu.Unlock()
		origin := "-"
		if a := c.RemoteAddr(); a != nil && a.Network() == "tcp" {
			origin = a.String()
		}
		r.send(fmt.Sprintf("accepted %d %s", id, origin))
	}
}

// take removes and returns the pending connection id, or nil.
func (r *relay) take(id uint64) net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[id]
	if p == nil {
		return nil
	}
	delete(r.pending, id)
	p.timer.Stop()
	return p.c
}

// acceptRendezvous accepts bastion's port-forwarded connections; each
// names a pending connection, which it is spliced with.
func (r *relay) acceptRendezvous(l net.Listener, wg *sync.WaitGroup) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.serveRendezvous(c)
		}()
	}
}

func (r *relay) serveRendezvous(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(rendezvousWait))
	br := bufio.NewReaderSize(c, MaxRelayLine)
	line, err := readLine(br)
	if err != nil {
		c.Close()
		return
	}
	secret, idStr, _ := strings.Cut(line, " ")
	id, err := strconv.ParseUint(idStr, 10, 64)
	if err != nil || subtle.ConstantTimeCompare([]byte(secret), []byte(r.secret)) != 1 {
		c.Close()
		return
	}
	target := r.take(id)
	if target == nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if !r.track(c, target) {
		return
	}
	defer r.untrack(c, target)
	splice(target, &bufferedConn{Conn: c, r: br})
}

// track records a relayed pair so that closeAll ends it.
func (r *relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		r.active[c] = struct{}{}
	}
	return true
}

func (r *relay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		delete(r.active, c)
		c.Close()
	}
}

// closeAll ends pending and relayed connections.
func (r *relay) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for id, p := range r.pending {
		p.timer.Stop()
		p.c.Close()
		delete(r.pending, id)
	}
	for c := range r.active {
		c.Close()
	}
}

// bufferedConn reads what the rendezvous line's reader buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// splice copies both ways, half-closing each direction at its end, and
// returns when both are done.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else if bc, ok := dst.(*bufferedConn); ok {
			if cw, ok := bc.Conn.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
		} else {
			dst.Close()
		}
	}
	go half(a, b)
	go half(b, a)
	wg.Wait()
}

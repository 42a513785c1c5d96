package kube

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/bastion-ssh/bastion/internal/podhelper"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
	"github.com/bastion-ssh/bastion/session/kube/lifecycle"
)

// Listening in the pod (ssh -R, agent forwarding): Listen starts
// `bastion-helper relay` in the account's shell pod with an exec of its
// own, one per listener, for the listener's life. The relay listens there
// (TCP on the pod's loopback, or a 0600 socket in a 0700 directory, as the
// pod's uid, which is the account's) and announces each connection on its
// stdout; Accept opens a port-forward to the relay's rendezvous port on
// the pod's loopback and names the connection with the listener's random
// secret and its id, and the relay splices the two. The bytes of a
// relayed connection thus travel in a port-forward stream of their own,
// with the API server's flow control. internal/podhelper/relay.go has the
// protocol.
//
// Close (or the end of the listener's context, the SSH connection's)
// closes the relay's stdin, which ends it; should that not reach the pod,
// the relay ends itself a minute after bastion's last ping, and the exec
// is cut after a grace period. The listener counts as a session of the
// pod, so the pod is not reaped under it.

var _ session.Listener = (*Backend)(nil)

// relayStartTimeout bounds starting the relay and its first line.
const relayStartTimeout = 30 * time.Second

// relayStopGrace is how long the relay has to end after its stdin closed
// before its exec is cut.
const relayStopGrace = 5 * time.Second

// relayDefer is how long an interactive shell's relay waits before its
// exec, so as not to compete with the shell's: longer than a warm
// pod's time to prompt, shorter than anybody takes to type become (the
// command retries for 3 s).
const relayDefer = 400 * time.Millisecond

// maxAcceptQueue bounds the announced connections waiting for Accept
// (the relay bounds its own pending connections too).
const maxAcceptQueue = 16

// errNoHelper is why Listen fails without kube.pod.helper_image.
var errNoHelper = errors.New("listening in the pod needs bastion-helper: set kube.pod.helper_image")

// Listen listens in r's account's shell pod (starting the pod if needed)
// through bastion-helper's relay; see the comment above.
func (b *Backend) Listen(ctx context.Context, r session.Request, network, address string) (net.Listener, error) {
	var args []string
	switch network {
	case "tcp":
		host, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, fmt.Errorf("listen %q: %w", address, err)
		}
		if host == "localhost" {
			host = "127.0.0.1"
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("listen %q: not a loopback address", address)
		}
		args = []string{"tcp", net.JoinHostPort(ip.String(), port)}
	case "unix":
		if address != "" {
			return nil, fmt.Errorf("listen unix %q: only a fresh socket (address \"\") is supported", address)
		}
		args = []string{"unix", relaySocketPath()}
	default:
		return nil, fmt.Errorf("listen: unsupported network %q", network)
	}
	cl, id, err := b.resolve(r)
	if err != nil {
		return nil, err
	}
	if cl.Pod.HelperImage == "" {
		b.log.Warn("agent or remote forwarding refused: set kube.pod.helper_image so that shell pods have bastion-helper",
			"project", cl.Name(), "account", r.Account.Name)
		return nil, session.UserErrorf(errNoHelper, "agent and remote forwarding need bastion's helper in your shell pod (kube.pod.helper_image); ask the operators")
	}
	c, err := cl.Client()
	if err != nil {
		return nil, err
	}
	ns := namespaceFor(cl.Cfg, id)
	sctx, cancel := context.WithTimeout(ctx, b.cfg.StartTimeout+relayStartTimeout)
	defer cancel()
	var prog *progress
	note := func(line string) {
		b.log.Info("shell pod notice while listening", "pod", ns+"/"+podName(cl.Name(), id.acct.Name), "notice", line)
	}
	if r.TTY != nil && r.Stdout != nil {
		// An interactive shell's own listener (become typed in the
		// shell) starts the pod before the shell does: the person sees
		// the progress line Run would show.
		prog, note = newProgress(r.Stdout, cl.Name()), noticeTo(r)
	}
	pod, u, inst, err := b.acquire(sctx, c, id, ns, prog, note)
	if err != nil {
		return nil, err
	}
	if !hasHelper(pod) {
		b.pods.Untrack(u)
		return nil, session.UserErrorf(errNoHelper, "your shell pod was started without bastion's helper; agent and remote forwarding work once it is replaced (log out everywhere and wait for kube.idle_timeout, or ask the operators)")
	}
	// An interactive shell's socket (become typed in the shell): its
	// relay's exec waits until the shell's has been set up, as two
	// execs at once slow each other (the API server's and kubelet's
	// work, measured: the prompt came no sooner than with a relay
	// started before the shell).
	var after time.Duration
	if network == "unix" && r.TTY != nil {
		after = relayDefer
	}
	l, err := b.startRelay(sctx, ctx, c, pod, u, inst, args, after)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// relaySocketPath is a fresh socket path in the pod's /tmp (an emptyDir
// of the pod's own; see podspec.go).
func relaySocketPath() string {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	return "/tmp/" + podhelper.RelayDirPrefix + hex.EncodeToString(raw[:]) + "/" + podhelper.RelaySocketName
}

// startRelay execs the relay in pod. For a unix socket (args name its
// path) it returns at once, and the relay's first line comes later;
// otherwise it waits for that line, the listener's address. The
// listener lives until life ends or it is closed; start bounds the wait.
// It untracks u when the relay's exec is over.
func (b *Backend) startRelay(start, life context.Context, c *pods.Client, pod *corev1.Pod, u *lifecycle.Use, inst *lifecycle.Instance, args []string, after time.Duration) (*relayListener, error) {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	l := &relayListener{
		b: b, c: c, pod: pod,
		secret:    hex.EncodeToString(raw[:]),
		accepts:   make(chan announced, maxAcceptQueue),
		done:      make(chan struct{}),
		listening: make(chan struct{}),
		where:     pod.Namespace + "/" + pod.Name,
	}
	early := len(args) == 2 && args[0] == "unix"
	if early {
		l.addr, l.want = relayAddr(args[1]), args[1]
	}
	l.ctx, l.cancel = context.WithCancel(b.ctx)
	l.stopLife = context.AfterFunc(life, func() { l.Close() })
	// The exec's own context ends with the backend or when the relay has
	// had its grace after Close: not with life, so that the relay gets
	// its stdin's end first.
	ectx, ecancel := context.WithCancel(b.ctx)
	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	stderr := pods.Output{Max: execOutputMax}
	execDone := make(chan struct{})
	argv := append(append(append([]string{}, b.relayWrap...), helperPath, "relay"), args...)
	b.wg.Add(3)
	go func() { // the exec
		defer b.wg.Done()
		defer b.pods.Untrack(u)
		defer close(execDone)
		var err error
		if after == 0 || !isClosed(l.done, after) {
			err = c.Exec(ectx, pod, argv, remotecommand.StreamOptions{Stdin: stdinR, Stdout: outW, Stderr: &stderr})
		}
		if err != nil && ectx.Err() == nil {
			b.log.Info("relay ended", "pod", l.where, "err", err, "stderr", strings.TrimSpace(stderr.String()))
		}
		outW.CloseWithError(io.EOF)
		stdinR.CloseWithError(io.ErrClosedPipe)
		l.Close()
	}()
	go func() { // stdin: the secret, pings, then the end
		defer b.wg.Done()
		defer ecancel()
		t := time.NewTicker(podhelper.RelayPingInterval)
		defer t.Stop()
		if _, err := io.WriteString(stdinW, "secret "+l.secret+"\n"); err == nil {
		loop:
			for {
				select {
				case <-t.C:
					if _, err := io.WriteString(stdinW, "ping\n"); err != nil {
						break loop
					}
				case <-inst.Gone():
					l.Close()
				case <-l.done:
					break loop
				}
			}
		}
		l.Close()
		l.stopLife()
		_ = stdinW.Close() // EOF: the relay ends
		if !isClosed(execDone, relayStopGrace) {
			b.log.Debug("relay did not end after its stdin closed; cutting its exec", "pod", l.where)
		}
	}()
	ready := make(chan error, 1)
	go func() { // stdout: the relay's lines
		defer b.wg.Done()
		defer outR.Close()
		l.readLines(bufio.NewReaderSize(outR, podhelper.MaxRelayLine), ready)
	}()
	if early {
		b.wg.Add(1)
		go func() { // the relay's start, in the background
			defer b.wg.Done()
			t := time.NewTimer(relayStartTimeout)
			defer t.Stop()
			select {
			case err := <-ready:
				if err != nil {
					l.fail(err)
					return
				}
				close(l.listening)
			case <-t.C:
				l.fail(pods.UnavailableError(c.Project(), fmt.Errorf("start the relay in %s: no answer within %s", l.where, relayStartTimeout)))
			case <-l.done:
			}
		}()
		return l, nil
	}
	select {
	case err := <-ready:
		if err != nil {
			l.Close()
			return nil, err
		}
		close(l.listening)
	case <-start.Done():
		l.Close()
		return nil, pods.UnavailableError(c.Project(), fmt.Errorf("start the relay in %s: %w", l.where, context.Cause(start)))
	}
	return l, nil
}

// fail closes l because its relay could not listen; Accept and Ready
// return err from then on.
func (l *relayListener) fail(err error) {
	l.errMu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.errMu.Unlock()
	l.b.log.Warn("relay failed to start; its socket is not served", "pod", l.where, "socket", l.want, "err", err)
	l.Close()
}

// closed is why l is closed.
func (l *relayListener) closed() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	if l.err != nil {
		return fmt.Errorf("%w (%w)", l.err, net.ErrClosed)
	}
	return fmt.Errorf("relay in %s: %w", l.where, net.ErrClosed)
}

// Ready waits until the relay listens: a listener whose address was
// known before (a unix socket) refuses connections until then. It
// returns why the relay could not listen, or ctx's error.
func (l *relayListener) Ready(ctx context.Context) error {
	select {
	case <-l.listening:
		return nil
	case <-l.done:
		return l.closed()
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// announced is a connection the relay accepted.
type announced struct {
	id     uint64
	origin net.Addr
}

// relayListener is a net.Listener whose connections the relay accepts in
// the pod.
type relayListener struct {
	b      *Backend
	c      *pods.Client
	pod    *corev1.Pod
	secret string
	where  string // namespace/pod, for logs

	addr      net.Addr      // set before Listen returns
	want      string        // the socket path chosen up front, or ""
	port      uint16        // the rendezvous port; set before listening closes
	listening chan struct{} // closed once the relay listens
	accepts   chan announced

	errMu sync.Mutex
	err   error // why the relay could not listen

	stopLife  func() bool        // unregisters the close at the end of life
	ctx       context.Context    // ends with Close: claims in flight stop
	cancel    context.CancelFunc //
	done      chan struct{}
	closeOnce sync.Once
}

// readLines reads the relay's stdout: the first line (reported on
// ready), then announcements, until it ends.
func (l *relayListener) readLines(r *bufio.Reader, ready chan<- error) {
	first := true
	fail := func(err error) {
		if first {
			ready <- err
			first = false
		}
	}
	defer fail(fmt.Errorf("the relay in %s ended before it listened", l.where))
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				l.b.log.Warn("relay line too long; closing the listener", "pod", l.where)
				l.Close()
			}
			return
		}
		f := strings.Fields(strings.TrimSpace(string(line)))
		switch {
		case first && len(f) >= 2 && f[0] == "error":
			msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(line)), "error"))
			fail(session.UserErrorf(fmt.Errorf("relay in %s: %s", l.where, msg), "cannot listen in your shell: "+msg))
			return
		case first && len(f) == 3 && f[0] == "listening":
			port, err := strconv.ParseUint(f[2], 10, 16)
			if err != nil {
				fail(fmt.Errorf("relay in %s: bad line %q", l.where, line))
				return
			}
			if l.want != "" {
				if f[1] != l.want {
					fail(fmt.Errorf("relay in %s: listening on %q, not %q", l.where, f[1], l.want))
					return
				}
			} else {
				l.addr = relayAddr(f[1])
			}
			l.port = uint16(port)
			ready <- nil
			first = false
		case !first && len(f) == 3 && f[0] == "accepted":
			id, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				continue
			}
			var origin net.Addr = l.addr
			if ap, err := netip.ParseAddrPort(f[2]); err == nil {
				origin = net.TCPAddrFromAddrPort(ap)
			}
			select {
			case l.accepts <- announced{id: id, origin: origin}:
			case <-l.done:
				return
			}
		default:
			if first {
				fail(fmt.Errorf("relay in %s: unexpected line %q", l.where, line))
				return
			}
		}
	}
}

// relayAddr is the listener's address as the relay printed it.
func relayAddr(s string) net.Addr {
	if strings.HasPrefix(s, "/") {
		return &net.UnixAddr{Name: s, Net: "unix"}
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return podAddr(s)
}

// Accept waits for a connection the relay accepted and claims it through
// a port-forward to the rendezvous port. A connection that cannot be
// claimed is logged and skipped.
func (l *relayListener) Accept() (net.Conn, error) {
	for {
		var a announced
		select {
		case a = <-l.accepts:
		case <-l.done:
			return nil, l.closed()
		}
		ctx, cancel := context.WithTimeout(l.ctx, relayStartTimeout)
		fc, err := l.b.forward(ctx, l.c, l.pod, l.port)
		cancel()
		if err != nil {
			select {
			case <-l.done:
				return nil, l.closed()
			default:
			}
			l.b.log.Warn("relayed connection lost: port-forward to the relay failed", "pod", l.where, "err", err)
			continue
		}
		if _, err := fmt.Fprintf(fc, "%s %d\n", l.secret, a.id); err != nil {
			fc.Close()
			l.b.log.Warn("relayed connection lost", "pod", l.where, "err", err)
			continue
		}
		return &relayedConn{Conn: fc, local: l.addr, remote: a.origin}, nil
	}
}

// Close stops the listener; the relay in the pod ends with it.
func (l *relayListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.cancel()
	})
	return nil
}

func (l *relayListener) Addr() net.Addr {
	if l.addr == nil {
		return podAddr(l.where)
	}
	return l.addr
}

// relayedConn is a connection accepted in the pod.
type relayedConn struct {
	net.Conn      // a port-forward connection (forwardConn)
	local, remote net.Addr
}

// CloseWrite half-closes: the pod's side reads EOF.
func (c *relayedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

func (c *relayedConn) LocalAddr() net.Addr  { return c.local }
func (c *relayedConn) RemoteAddr() net.Addr { return c.remote }

package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/bastion-ssh/bastion/session"
)

var _ session.Listener = (*Backend)(nil)

// agentSocketName is the socket's name inside its private directory.
const agentSocketName = "agent.sock"

// Listen accepts connections on this host for r.Account: TCP on the
// loopback only (OpenSSH's GatewayPorts no), or a unix socket in a fresh
// 0700 directory under the temporary directory, owned by the account
// when bastion runs as root.
func (b *Backend) Listen(ctx context.Context, r session.Request, network, address string) (net.Listener, error) {
	switch network {
	case "tcp":
		addr, err := LoopbackAddress(address)
		if err != nil {
			return nil, err
		}
		var lc net.ListenConfig
		l, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
		}
		return b.closeWith(ctx, l, nil), nil
	case "unix":
		if address != "" {
			return nil, fmt.Errorf("listen unix %q: only a fresh socket (address \"\") is supported", address)
		}
		return b.listenPrivate(ctx, r.Account.UID, r.Account.GID)
	default:
		return nil, fmt.Errorf("listen: unsupported network %q", network)
	}
}

// LoopbackAddress checks that address (host:port) names a loopback
// address and returns it with "localhost" resolved to 127.0.0.1.
func LoopbackAddress(address string) (string, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", address, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return "", fmt.Errorf("listen address %q: not a loopback address", address)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// listenPrivate makes a 0700 directory holding a 0600 socket, both owned
// by uid:gid when bastion runs as root and the account is another user.
func (b *Backend) listenPrivate(ctx context.Context, uid, gid int) (net.Listener, error) {
	dir, err := os.MkdirTemp("", "bastion-ssh-")
	if err != nil {
		return nil, fmt.Errorf("listen unix: %w", err)
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	// Exactly 0700, even under a setgid temporary directory.
	if err := os.Chmod(dir, 0o700); err != nil {
		cleanup()
		return nil, fmt.Errorf("listen unix: chmod %s: %w", dir, err)
	}
	path := filepath.Join(dir, agentSocketName)
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		cleanup()
		return nil, fmt.Errorf("listen unix: chmod %s: %w", path, err)
	}
	if b.asRoot && uid >= 0 && uid != os.Geteuid() {
		for _, p := range []string{dir, path} {
			if err := os.Lchown(p, uid, gid); err != nil {
				l.Close()
				cleanup()
				return nil, fmt.Errorf("listen unix: chown %s to %d:%d: %w", p, uid, gid, err)
			}
		}
	}
	return b.closeWith(ctx, l, cleanup), nil
}

// closeWith returns l closed when ctx ends or on Close, after which
// cleanup (may be nil) runs once.
func (b *Backend) closeWith(ctx context.Context, l net.Listener, cleanup func()) net.Listener {
	cl := &ctxListener{Listener: l, cleanup: cleanup, exits: &b.exits}
	stop := context.AfterFunc(ctx, func() { _ = cl.Close() })
	cl.mu.Lock()
	cl.stop = stop
	cl.mu.Unlock()
	return cl
}

type ctxListener struct {
	net.Listener
	exits   *exitWatcher
	cleanup func()
	once    sync.Once
	err     error

	mu   sync.Mutex
	stop func() bool // unregisters the close on ctx
}

func (l *ctxListener) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		if l.stop != nil {
			l.stop()
		}
		l.mu.Unlock()
		l.err = l.Listener.Close()
		if l.cleanup != nil {
			l.cleanup()
		}
	})
	return l.err
}

var _ session.AcceptWatcher = (*ctxListener)(nil)

// WatchAccept puts the listening socket into the exit watcher's epoll
// set (session.AcceptWatcher).
func (l *ctxListener) WatchAccept(ready func()) (arm func() error, stop func(), err error) {
	sc, ok := l.Listener.(syscall.Conn)
	if !ok {
		return nil, nil, errors.New("watch accept: not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("watch accept: %w", err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return nil, nil, fmt.Errorf("watch accept: %w", err)
	}
	return l.exits.watchReadable(fd, ready)
}

package local

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// exitWatcher tells sessions when their process has exited. Every
// session's pidfd sits in one epoll set, and that epoll descriptor is
// waited on through the runtime's poller: a waiting session costs a map
// entry instead of a goroutine (and its stack), and the watcher is one
// parked goroutine, not a thread.
type exitWatcher struct {
	mu      sync.Mutex
	started bool
	closed  bool
	epfd    int
	ep      *os.File
	waiters map[int32]chan struct{} // pidfd → closed when the process exits
	done    chan struct{}           // closed when the loop has returned
}

// wait returns a channel that is closed once pid has exited (it is not
// reaped: cmd.Wait does that). Without epoll or pidfds it falls back to a
// goroutine per process (waitExit).
func (w *exitWatcher) wait(pid int) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.started {
		w.started = true
		if err := w.start(); err != nil {
			w.closed = true
		}
	}
	if w.closed {
		return waitExit(pid)
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return waitExit(pid)
	}
	ch := make(chan struct{})
	// Registered under mu, so the loop cannot see the event before the
	// waiter is in the map.
	w.waiters[int32(fd)] = ch
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		delete(w.waiters, int32(fd))
		unix.Close(fd)
		return waitExit(pid)
	}
	return ch
}

func (w *exitWatcher) start() error {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	ep := os.NewFile(uintptr(fd), "pidfd-epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return err
	}
	w.epfd, w.ep = fd, ep
	w.waiters = make(map[int32]chan struct{})
	w.done = make(chan struct{})
	go w.loop(rc)
	return nil
}

func (w *exitWatcher) loop(rc syscall.RawConn) {
	defer close(w.done)
	events := make([]unix.EpollEvent, 128)
	_ = rc.Read(func(efd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(efd), events, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return true
			}
			if n == 0 {
				return false // park until the epoll descriptor is readable
			}
			w.mu.Lock()
			for _, e := range events[:n] {
				if ch, ok := w.waiters[e.Fd]; ok {
					delete(w.waiters, e.Fd)
					_ = unix.EpollCtl(int(efd), unix.EPOLL_CTL_DEL, int(e.Fd), nil)
					unix.Close(int(e.Fd))
					close(ch)
				}
			}
			w.mu.Unlock()
		}
	})
}

// close stops the watcher. Sessions still waiting are released (their
// cmd.Wait then blocks until the process exits).
func (w *exitWatcher) close() {
	w.mu.Lock()
	w.closed = true
	ep, done := w.ep, w.done
	w.ep = nil
	for fd, ch := range w.waiters {
		unix.Close(int(fd))
		close(ch)
	}
	w.waiters = nil
	w.mu.Unlock()
	if ep != nil {
		ep.Close()
		<-done
	}
}

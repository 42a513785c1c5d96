package local

import (
	"errors"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// exitWatcher tells sessions when their process has exited, and when
// their pty has output (watchReadable). Every session's pidfd and pty
// master sit in one epoll set, and that epoll descriptor is waited on
// through the runtime's poller: a waiting session costs a map entry
// instead of a goroutine (and its stack), and the watcher is one parked
// goroutine, not a thread.
type exitWatcher struct {
	mu      sync.Mutex
	started bool
	closed  bool
	epfd    int
	ep      *os.File
	waiters map[int32]watch // by descriptor
	done    chan struct{}   // closed when the loop has returned
}

// watch is what an event on a descriptor does: a pidfd's closes exited
// or calls onExit (and the pidfd is closed and forgotten); a readable
// descriptor's calls ready, once per arming (EPOLLONESHOT).
type watch struct {
	exited chan struct{}
	onExit func()
	pid    int // with onExit
	ready  func()
	token  *byte // tells this watch from a later one on the same descriptor number
}

func (wt watch) isExit() bool { return wt.exited != nil || wt.onExit != nil }

// wait returns a channel that is closed once pid has exited (it is not
// reaped: cmd.Wait does that). Without epoll or pidfds it falls back to a
// goroutine per process (waitExit).
func (w *exitWatcher) wait(pid int) <-chan struct{} {
	ch := make(chan struct{})
	if !w.add(pid, watch{exited: ch}) {
		return waitExit(pid)
	}
	return ch
}

// onExit calls f once pid has exited (not reaped), on the watcher's
// goroutine (f must not block). Without epoll or pidfds, and for the
// processes still running when the watcher closes, a goroutine waits
// (waitExit).
func (w *exitWatcher) onExit(pid int, f func()) {
	if !w.add(pid, watch{onExit: f, pid: pid}) {
		ch := waitExit(pid)
		go func() {
			<-ch
			f()
		}()
	}
}

// add puts pid's pidfd into the epoll set with wt; false when it cannot.
func (w *exitWatcher) add(pid int, wt watch) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.startLocked() {
		return false
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return false
	}
	// Registered under mu, so the loop cannot see the event before the
	// waiter is in the map.
	w.waiters[int32(fd)] = wt
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		delete(w.waiters, int32(fd))
		unix.Close(fd)
		return false
	}
	return true
}

// startLocked starts the watcher on first use; false when it cannot
// run (no epoll) or was closed.
func (w *exitWatcher) startLocked() bool {
	if !w.started {
		w.started = true
		if err := w.start(); err != nil {
			w.closed = true
		}
	}
	return !w.closed
}

// watchReadable calls ready, on the watcher's goroutine (it must not
// block), when fd becomes readable; after each call the watch is idle
// until arm is called. stop ends the watch; fd should stay open until
// then (a descriptor closed earlier leaves the epoll set by itself, and
// stop then leaves a later watch on the same number alone). An error
// means the watcher cannot watch fd (the caller falls back to a
// goroutine).
func (w *exitWatcher) watchReadable(fd int, ready func()) (arm func() error, stop func(), err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.startLocked() {
		return nil, nil, errors.New("no epoll watcher")
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(fd)}
	token := new(byte)
	w.waiters[int32(fd)] = watch{ready: ready, token: token}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		delete(w.waiters, int32(fd))
		return nil, nil, err
	}
	epfd := w.epfd
	arm = func() error {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(fd)}
		return unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	}
	stop = func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		// Only this watch: if fd was closed before stop, its number may
		// belong to another watch by now.
		if wt, ok := w.waiters[int32(fd)]; ok && wt.token == token {
			delete(w.waiters, int32(fd))
			if !w.closed {
				_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
			}
		}
	}
	return arm, stop, nil
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
	w.waiters = make(map[int32]watch)
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
			var ready []func()
			w.mu.Lock()
			for _, e := range events[:n] {
				wt, ok := w.waiters[e.Fd]
				switch {
				case !ok:
				case wt.isExit():
					delete(w.waiters, e.Fd)
					_ = unix.EpollCtl(int(efd), unix.EPOLL_CTL_DEL, int(e.Fd), nil)
					unix.Close(int(e.Fd))
					if wt.exited != nil {
						close(wt.exited)
					} else {
						ready = append(ready, wt.onExit)
					}
				default:
					ready = append(ready, wt.ready)
				}
			}
			w.mu.Unlock()
			// Outside the lock: ready takes its own locks, which may be
			// held while stop takes w.mu.
			for _, f := range ready {
				f()
			}
			clear(ready)
		}
	})
}

// close stops the watcher. Sessions still waiting are released (their
// cmd.Wait then blocks until the process exits); an onExit waits on a
// goroutine of its own.
func (w *exitWatcher) close() {
	w.mu.Lock()
	w.closed = true
	ep, done := w.ep, w.done
	w.ep = nil
	for fd, wt := range w.waiters {
		if wt.isExit() {
			unix.Close(int(fd))
			if wt.exited != nil {
				close(wt.exited)
			} else {
				go func() {
					<-waitExit(wt.pid)
					wt.onExit()
				}()
			}
		}
	}
	w.waiters = nil
	w.mu.Unlock()
	if ep != nil {
		ep.Close()
		<-done
	}
}

package main

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeInherited closes every descriptor above stderr that bastion was
// started with, as OpenSSH's sshd does with closefrom(3): a descriptor
// left open by whatever started bastion (a root-owned file, a socket)
// must never reach a user's session. Go opens all of its own descriptors
// close-on-exec, and so does the runtime, so a descriptor above 2
// without FD_CLOEXEC at this point was inherited. It runs first thing in
// main; descriptors the Go runtime opened before (its poller) are kept.
func closeInherited() {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		// No /proc: mark everything close-on-exec at least.
		_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
		return
	}
	names, _ := d.Readdirnames(-1)
	self := int(d.Fd())
	var inherited []int
	for _, n := range names {
		fd, err := strconv.Atoi(n)
		if err != nil || fd <= 2 || fd == self {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err == nil && flags&unix.FD_CLOEXEC == 0 {
			inherited = append(inherited, fd)
		}
	}
	d.Close()
	for _, fd := range inherited {
		_ = unix.Close(fd)
	}
}

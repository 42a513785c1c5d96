// Command pause is the sandbox ("pause") container of the test cluster. It
// holds the pod's namespaces open, reaps orphaned children (it is PID 1 of
// the pod when the PID namespace is shared), and exits 0 on SIGTERM or SIGINT.
//
// It is built statically by integration/cluster/up and imported into
// containerd as bastion.test/pause:test; it is not part of the bastion.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every child that has exited, without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

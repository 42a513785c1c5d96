package local

import (
	"os/exec"
	"testing"
	"time"
)

func TestExitWatcher(t *testing.T) {
	t.Parallel()
	var w exitWatcher
	defer w.close()
	// Some exit before they are watched, some after.
	var cmds []*exec.Cmd
	var chans []<-chan struct{}
	for i := 0; i < 20; i++ {
		cmd := exec.Command("/bin/sh", "-c", "exit 0")
		if i%2 == 0 {
			cmd = exec.Command("/bin/sleep", "0.05")
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if i%4 == 1 {
			time.Sleep(20 * time.Millisecond)
		}
		cmds = append(cmds, cmd)
		chans = append(chans, w.wait(cmd.Process.Pid))
	}
	for i, ch := range chans {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("process %d: no exit seen", i)
		}
		if err := cmds[i].Wait(); err != nil {
			t.Errorf("process %d: %v", i, err)
		}
	}
	w.mu.Lock()
	left := len(w.waiters)
	w.mu.Unlock()
	if left != 0 {
		t.Errorf("%d waiters left", left)
	}
}

package kube

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// goneSoon reports whether process pid ends within a second (a signal
// is delivered asynchronously).
func goneSoon(pid int) bool {
	for range 50 {
		if gone(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// gone reports whether process pid has ended (no such process, or a
// zombie).
func gone(pid int) bool {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(st)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) == 0 || fields[0] == "Z"
}

// sessionTree starts, as an exec of a pod would, a session leader with
// BASTION_SESSION=token in its environment, which starts: a child, a
// child that cleared its environment, and a child that ignores SIGHUP. It
// returns the leader and the children's PIDs.
func sessionTree(t *testing.T, token string) (*exec.Cmd, []int) {
	t.Helper()
	leader := exec.Command("/bin/sh", "-c", `sleep 300 & echo $!
env -i sleep 301 & echo $!
sh -c 'trap "" HUP; exec sleep 302' & echo $!
wait`)
	leader.Env = append(os.Environ(), "BASTION_SESSION="+token)
	leader.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := leader.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	sc := bufio.NewScanner(out)
	for len(pids) < 3 && sc.Scan() {
		pid, err := strconv.Atoi(sc.Text())
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	t.Cleanup(func() {
		for _, pid := range append(pids, leader.Process.Pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = leader.Wait()
	})
	if len(pids) != 3 {
		t.Fatalf("the session tree started %d children", len(pids))
	}
	time.Sleep(100 * time.Millisecond) // let the children exec
	return leader, pids
}

func runKill(t *testing.T, token, sig string) {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-c", killScript, "bastion", token, sig).CombinedOutput()
	if err != nil {
		t.Fatalf("kill.sh %s: %v %s", sig, err, out)
	}
}

// kill.sh on a local process tree: a signal reaches only the session's
// leader; END hangs up every process of the session, including one that
// cleared its environment, and kills one that ignores the hang-up; other
// sessions are left alone.
func TestKillScript(t *testing.T) {
	if _, err := os.Stat("/proc/self/environ"); err != nil {
		t.Skip("needs /proc")
	}
	t.Parallel()
	token, other := newToken(), newToken()
	leader, pids := sessionTree(t, token)
	bystander, bystanders := sessionTree(t, other)

	runKill(t, token, "INT")
	if err := leader.Wait(); err == nil {
		t.Error("the leader did not die of SIGINT")
	}
	for _, pid := range pids {
		if gone(pid) {
			t.Errorf("SIGINT reached child %d, not only the leader", pid)
		}
	}

	// The leader is gone now; its children still carry the session: END
	// finds them by the token (and, for env -i's child, by its session).
	leader2, pids2 := sessionTree(t, token)
	start := time.Now()
	runKill(t, token, "END")
	took := time.Since(start)
	_ = leader2.Wait()
	// pids[1] cleared its environment and its leader is gone: it escapes,
	// as a daemon does.
	for i, pid := range []int{pids[0], pids[2], pids2[0], pids2[1], pids2[2]} {
		if !goneSoon(pid) {
			t.Logf("process %d (#%d) state: %s", pid, i, procStat(pid))
			t.Errorf("process %d of the session outlived END", pid)
		}
	}
	if took < time.Second || took > 20*time.Second {
		t.Errorf("END took %v: want the two-second wait for the process that ignores SIGHUP", took)
	}
	for _, pid := range append(bystanders, bystander.Process.Pid) {
		if gone(pid) {
			t.Errorf("END ended process %d of another session", pid)
		}
	}
}

func procStat(pid int) string {
	st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return string(st)
}

package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Linux /proc readers: process trees, CPU time and memory.

// clockTicks is USER_HZ, which is 100 on every Linux the bench runs on.
const clockTicks = 100

type procStat struct {
	pid, ppid int
	comm      string
	cpuTicks  int64 // utime+stime
	childCPU  int64 // cutime+cstime: children that were waited for
	startTime uint64
}

func readStat(pid int) (procStat, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	open := bytes.IndexByte(data, '(')
	close := bytes.LastIndexByte(data, ')')
	if open < 0 || close < open {
		return procStat{}, false
	}
	f := strings.Fields(string(data[close+1:]))
	// f[0] is field 3 (state); utime is field 14, so f[11].
	if len(f) < 20 {
		return procStat{}, false
	}
	n := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	st := procStat{pid: pid, comm: string(data[open+1 : close])}
	st.ppid = int(n(1))
	st.cpuTicks = n(11) + n(12)
	st.childCPU = n(13) + n(14)
	st.startTime = uint64(n(19))
	return st, true
}

// allProcs reads every process's stat.
func allProcs() []procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]procStat, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			out = append(out, st)
		}
	}
	return out
}

// descendants returns every process below pid (not pid itself).
func descendants(pid int) []procStat {
	procs := allProcs()
	children := make(map[int][]procStat)
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p)
	}
	var out []procStat
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c.pid)
		}
	}
	return out
}

// killProcs sends SIGKILL to each process that is still the one listed
// (same start time), so a recycled pid is never hit.
func killProcs(ps []procStat) {
	for _, p := range ps {
		if cur, ok := readStat(p.pid); ok && cur.startTime == p.startTime {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
}

// memKiB is a process's resident and proportional set size.
type memKiB struct{ RSS, PSS int64 }

func readMem(pid int) (memKiB, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return memKiB{}, false
	}
	var m memKiB
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			m.RSS = v
		case "Pss:":
			m.PSS = v
		}
	}
	return m, true
}

// threads is the number of threads of pid.
func threads(pid int) int {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

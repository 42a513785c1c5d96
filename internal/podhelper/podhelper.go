package podhelper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TokenVar carries the session token in every process of the session.
const TokenVar = "BASTION_SESSION"

// statusDir is where run leaves, for status, the name of a killing signal
// or that its process exited 0.
var statusDir = os.TempDir()

func statusPath(token string) string {
	return filepath.Join(statusDir, ".bastion-exit-"+token)
}

// validToken keeps a token usable in a file name and a /proc match.
func validToken(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for _, c := range t {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// Run is `run TOKEN SHELL COMMAND PIDS [NAME=VALUE...]`: it starts the
// session's process on this process's stdin, stdout and stderr and
// returns its exit status (128+N when killed by signal N, whose name it
// leaves for Status).
func Run(args []string, stderr io.Writer) int {
	if len(args) < 4 {
		fmt.Fprintln(stderr, "bastion-helper run: usage: run TOKEN SHELL COMMAND PIDS [NAME=VALUE...]")
		return 2
	}
	token, shell, command, pidsArg := args[0], args[1], args[2], args[3]
	if !validToken(token) {
		fmt.Fprintln(stderr, "bastion-helper run: bad token")
		return 2
	}
	env := append(os.Environ(), TokenVar+"="+token)
	trailer := false
	for _, kv := range args[4:] {
		if kv == TrailerVar+"=1" {
			trailer = true
			continue
		}
		if i := strings.IndexByte(kv, '='); i > 0 {
			env = append(env, kv)
		}
	}
	ended := func(code int, status string) int {
		if trailer {
			_, _ = io.WriteString(os.Stdout, Trailer(token, status))
		}
		return code
	}
	if pids, err := strconv.Atoi(pidsArg); err == nil && pids > 0 {
		lim := unix.Rlimit{Cur: uint64(pids), Max: uint64(pids)}
		_ = unix.Setrlimit(unix.RLIMIT_NPROC, &lim)
	}
	dir := os.Getenv("HOME")
	if st, err := os.Stat(dir); dir == "" || err != nil || !st.IsDir() {
		dir = "/"
	}
	if st, err := os.Stat(shell); err != nil || st.Mode()&0o111 == 0 || st.IsDir() {
		shell = "/bin/sh"
	}
	cmd := &exec.Cmd{Path: shell, Env: env, Dir: dir, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if command == "" {
		cmd.Args = []string{"-" + filepath.Base(shell)} // a login shell
	} else {
		cmd.Args = []string{filepath.Base(shell), "-c", command}
	}
	// This process is the session leader the runtime made; the shell
	// stays in its session (and on its terminal). Signals sent to this
	// process (a hang-up, ^C on the terminal, which the shell gets too)
	// must not kill it before the shell's status is known: they are
	// caught, not ignored, so the shell starts with default dispositions.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGPIPE)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "bastion-helper: cannot start %s: %v\n", shell, err)
		return ended(127, "exit 127")
	}
	_ = cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		name := strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
		if name == "" {
			name = strconv.Itoa(int(ws.Signal()))
		}
		core := "0"
		if ws.CoreDump() {
			core = "1"
		}
		writeStatus(token, name+" "+core+"\n")
		return ended(128+int(ws.Signal()), name+" "+core)
	}
	if ws.ExitStatus() == 0 {
		// The exec API reports a stream cut before the status (a
		// container runtime restart) as success too: this record is how
		// bastion tells a real exit 0 apart when the trailer was lost.
		// With a trailer asked for, a lost one means the stream was cut
		// after the exit, with the end of the output: the record says so.
		if trailer {
			writeStatus(token, Exited0Trailer+"\n")
		} else {
			writeStatus(token, Exited0+"\n")
		}
	}
	return ended(ws.ExitStatus(), "exit "+strconv.Itoa(ws.ExitStatus()))
}

// TrailerVar, given as TrailerVar=1 among run's NAME=VALUE arguments,
// asks run to end its output with Trailer; it is not passed on to the
// session's process. bastion asks for it; a helper too old to know it
// passes it on and writes no trailer, and bastion then asks Status.
const TrailerVar = "BASTION_EXIT_TRAILER"

// TrailerEnd ends a trailer (the String Terminator).
const TrailerEnd = "\x1b\\"

// TrailerPrefix is how the trailer of the session token starts.
func TrailerPrefix(token string) string { return "\x1b_bastion-exit " + token + " " }

// Trailer is what run writes on its stdout, when asked, after the
// session's process ended: how it ended, as Status words it ("exit N", or
// "NAME CORE" for a killing signal). It reaches bastion in order after the
// process's own output, on the same stream, so bastion knows the exit
// without another exec; the exec API alone cannot tell a stream cut before
// its status from an exit 0. It is an APC escape sequence (ESC _ ... ESC
// \), which terminals do not display, and holds no newline, which a
// terminal's output processing would change.
func Trailer(token, status string) string { return TrailerPrefix(token) + status + TrailerEnd }

// What Status prints besides a signal's "NAME CORE".
const (
	// Exited0: the session's process exited with status 0.
	Exited0 = "exit 0"
	// Exited0Trailer: the session's process exited with status 0, and
	// run then wrote the trailer: bastion, which asks only when no
	// trailer reached it, knows that the stream was cut after the exit
	// and that the end of the output may be lost with it.
	Exited0Trailer = "exit 0 after a trailer"
	// NoRecord: run left nothing, so its process did not exit 0 nor die
	// of a signal (yet): it is still running, never started, or was cut
	// off with run itself.
	NoRecord = "none"
)

// writeStatus leaves line for Status; a failure only costs the signal's
// name (the backend then reports the number). The record is written
// whole under a name of its own, then renamed into place: Status never
// reads half of one, and a record left by an earlier run with the same
// token (tokens are random per session; a test's are not), which Status
// would forget as too old, is replaced instead of keeping this one out.
// The rename replaces whatever is at the path (even a symlink) without
// following it.
func writeStatus(token, line string) {
	f, err := os.CreateTemp(statusDir, ".bastion-exit-tmp-*")
	if err != nil {
		return
	}
	_, werr := f.WriteString(line)
	if cerr := f.Close(); werr != nil || cerr != nil || os.Rename(f.Name(), statusPath(token)) != nil {
		_ = os.Remove(f.Name())
	}
}

// Status returns how the session's process ended: "TERM 0" (killed by a
// signal: its name and whether it dumped core), Exited0, or NoRecord; ""
// when run could not have left a record (its directory is not writable),
// so nothing is known. Asking again gives the same answer: bastion asks
// again when an answer did not reach it (an exec cut or slow on a busy
// node), and a record consumed by the first asking made a clean exit
// read as a cut stream in the 200-account login storm. Records are
// forgotten recordTTL after they were left.
func Status(token string) (string, error) {
	if !validToken(token) {
		return "", errors.New("bad token")
	}
	forgetOld(time.Now().Add(-recordTTL))
	b, err := os.ReadFile(statusPath(token))
	if errors.Is(err, os.ErrNotExist) {
		if unix.Access(statusDir, unix.W_OK) != nil {
			return "", nil
		}
		return NoRecord, nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// recordTTL is how long a session's record is kept for Status: far longer
// than bastion keeps asking.
const recordTTL = 10 * time.Minute

// forgetOld removes the records left before cutoff.
func forgetOld(cutoff time.Time) {
	old, _ := filepath.Glob(statusPath("*"))
	for _, p := range old {
		if fi, err := os.Lstat(p); err == nil && fi.ModTime().Before(cutoff) {
			_ = os.Remove(p)
		}
	}
}

// proc is what hangup and signal need from /proc/PID.
type proc struct {
	pid, ppid, sid int
	state          byte
	args           []string
	env            [][]byte
}

// procs lists the processes under root (/proc) that this uid may read.
func procs(root string) []proc {
	ents, _ := os.ReadDir(root)
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, ok := readProc(root, pid)
		if ok {
			out = append(out, p)
		}
	}
	return out
}

func readProc(root string, pid int) (proc, bool) {
	d := filepath.Join(root, strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(d, "stat"))
	if err != nil {
		return proc{}, false
	}
	// pid (comm) state ppid pgrp session ...; comm may hold spaces and ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return proc{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 4 {
		return proc{}, false
	}
	p := proc{pid: pid, state: f[0][0]}
	p.ppid, _ = strconv.Atoi(f[1])
	p.sid, _ = strconv.Atoi(f[3])
	if b, err := os.ReadFile(filepath.Join(d, "cmdline")); err == nil {
		p.args = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	}
	if b, err := os.ReadFile(filepath.Join(d, "environ")); err == nil {
		p.env = bytes.Split(b, []byte{0})
	}
	return p, true
}

// isRun reports whether p is `bastion-helper run TOKEN ...`.
func (p proc) isRun(token string) bool {
	return len(p.args) >= 3 && p.args[1] == "run" && p.args[2] == token
}

func (p proc) hasToken(token string) bool {
	want := []byte(TokenVar + "=" + token)
	for _, kv := range p.env {
		if bytes.Equal(kv, want) {
			return true
		}
	}
	return false
}

// sessionOf returns the POSIX session IDs of token's session: that of its
// run process or, for a session started before the helper (by a shell
// wrapper), those led by a process carrying the token. A process that
// carries the token but called setsid itself is not the session's.
func sessionOf(ps []proc, token string) map[int]bool {
	sids := map[int]bool{}
	for _, p := range ps {
		if p.isRun(token) {
			sids[p.sid] = true
		}
	}
	if len(sids) > 0 {
		return sids
	}
	for _, p := range ps {
		if p.hasToken(token) && p.sid == p.pid {
			sids[p.sid] = true
		}
	}
	return sids
}

// Hangup ends token's session as a terminal hang-up does (see the package
// comment) and returns when what it ended is gone or was killed.
func Hangup(ctx context.Context, procRoot, token string, grace time.Duration) error {
	if !validToken(token) {
		return errors.New("bad token")
	}
	self := os.Getpid()
	ps := procs(procRoot)
	sids := sessionOf(ps, token)
	var targets []int
	for _, p := range ps {
		if sids[p.sid] && p.pid != self && p.state != 'Z' {
			targets = append(targets, p.pid)
		}
	}
	for _, pid := range targets {
		_ = unix.Kill(pid, unix.SIGHUP)
		_ = unix.Kill(pid, unix.SIGCONT)
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var left []int
		for _, pid := range targets {
			if p, ok := readProc(procRoot, pid); ok && p.state != 'Z' && sids[p.sid] {
				left = append(left, pid)
			}
		}
		targets = left
		if len(targets) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			continue
		case <-deadline.C:
		}
		for _, pid := range targets {
			if !handlesHUP(procRoot, pid) {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
		return nil
	}
}

// handlesHUP reports whether pid ignores or catches SIGHUP (nohup, a
// daemon that reloads on it, this helper): a hang-up leaves those alone.
func handlesHUP(procRoot string, pid int) bool {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "SigIgn" && k != "SigCgt") {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err == nil && mask&(1<<(unix.SIGHUP-1)) != 0 {
			return true
		}
	}
	return false
}

// Signal delivers sig (a name without SIG) to token's session process: the
// children of its run process, or, for a session started before the
// helper, the session leaders carrying the token.
func Signal(procRoot, token, sig string) error {
	if !validToken(token) {
		return errors.New("bad token")
	}
	s := unix.SignalNum("SIG" + sig)
	if s == 0 {
		return fmt.Errorf("unknown signal %q", sig)
	}
	ps := procs(procRoot)
	runs := map[int]bool{}
	for _, p := range ps {
		if p.isRun(token) {
			runs[p.pid] = true
		}
	}
	for _, p := range ps {
		if p.state == 'Z' {
			continue
		}
		if runs[p.ppid] || (len(runs) == 0 && p.hasToken(token) && p.sid == p.pid) {
			_ = unix.Kill(p.pid, s)
		}
	}
	return nil
}

// Install copies this executable to dir/bastion-helper (mode 0755), for
// the init container that puts the helper into a pod's shared volume
// (bastion's image has no shell and no cp).
func Install(dir string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	src, err := os.Open(exe)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	defer src.Close()
	dst := filepath.Join(dir, "bastion-helper")
	tmp, err := os.CreateTemp(dir, ".bastion-helper-*")
	if err != nil {
		return fmt.Errorf("install into %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("install into %s: %w", dir, err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("install into %s: %w", dir, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install into %s: %w", dir, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install into %s: %w", dir, err)
	}
	return nil
}

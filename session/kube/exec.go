package kube

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/bastion-ssh/bastion/internal/podhelper"
	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
	"github.com/bastion-ssh/bastion/session/kube/lifecycle"
)

// How a session's process is started and ended in the pod.
//
// The exec runs /bin/sh -c wrapperScript, which exports the session's
// variables, including BASTION_SESSION=TOKEN (a random token per session),
// sets the pids limit, changes to the home directory and execs the
// account's shell (a login shell, or SHELL -c COMMAND). The container
// runtime makes every exec'd process a session leader, so everything the
// command starts shares its session ID and inherits the token.
//
// Closing an exec stream does not end the process in the container
// (neither the API server nor the kubelet nor the runtime kill it). So
// when a session ends before its process did (the SSH connection dropped,
// the channel closed, bastion drains), bastion runs a second exec,
// kill.sh TOKEN END: it finds every process in the pod whose
// environment carries the token or whose session is that of such a
// leader, sends SIGHUP and SIGCONT (what a hung-up terminal sends), waits
// up to two seconds, and SIGKILLs what is left. SSH "signal" requests use
// the same script to signal the leader. A process that starts a new
// session and clears its environment escapes, as a daemon escapes a
// logout on an ordinary host; it is detached work, which keeps the pod
// for up to kube.detached_max_age (doc.go).
// If bastion itself dies, processes live on until the pod is reaped.

const wrapperScript = `t=$1 sh=$2 cmd=$3 pids=$4; shift 4
export BASTION_SESSION="$t"
for kv do export "$kv"; done
if [ "$pids" -gt 0 ] 2>/dev/null; then ulimit -u "$pids" 2>/dev/null || ulimit -p "$pids" 2>/dev/null; fi
cd "$HOME" 2>/dev/null || cd /
[ -x "$sh" ] || sh=/bin/sh
if [ -z "$cmd" ]; then exec "$sh" -l; fi
exec "$sh" -c "$cmd"`

// killScript is kill.sh: kill.sh TOKEN SIGNAL|END.
//
//go:embed kill.sh
var killScript string

// With kube.pod.helper_image set, the pod has bastion-helper (an init
// container copies it from bastion's image into an emptyDir at helperDir)
// and the same jobs go through it instead of the scripts above: `run`
// replaces wrapperScript and keeps the name of a killing signal, which
// `status` reads back when the exec API reports 128+N (the API has no
// other way to say "killed by signal"); `hangup` replaces killScript END
// with a terminal hang-up's semantics (what ignores SIGHUP, nohup, or left
// the session, setsid/tmux/screen, lives on); `signal` replaces killScript
// SIG. Whether a pod has the helper is read from its spec, so pods made
// before the key was set keep working with the scripts.
//
// The helper is also the shell's `become` command (internal/become's
// client), mounted at becomePath.
const (
	helperVolume = "bastion-helper"
	helperDir    = "/.bastion"
	helperPath   = helperDir + "/bastion-helper"
	becomePath   = "/usr/local/bin/become"
)

// hasHelper reports whether pod was made with the helper's init container.
func hasHelper(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == helperVolume {
			return true
		}
	}
	return false
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reserved are variables the pod sets (from the account) or the wrapper
// owns; a client cannot override them.
var reserved = map[string]bool{"HOME": true, "USER": true, "LOGNAME": true, "SHELL": true, "BASTION_SESSION": true, "PATH": true,
	podhelper.TrailerVar: true}

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sessionCommand is the exec's argv for r.
func sessionCommand(r session.Request, token string, pids int, helper bool) []string {
	shell := r.Account.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	argv := []string{"/bin/sh", "-c", wrapperScript, "bastion-session", token, shell, r.Command, strconv.Itoa(pids)}
	if helper {
		argv = []string{helperPath, "run", token, shell, r.Command, strconv.Itoa(pids), podhelper.TrailerVar + "=1"}
	}
	env := map[string]string{}
	for k, v := range r.Env {
		if envName.MatchString(k) && !reserved[k] {
			env[k] = v
		}
	}
	if r.TTY != nil && r.TTY.Term != "" {
		env["TERM"] = r.TTY.Term
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		argv = append(argv, k+"="+env[k])
	}
	return argv
}

// sizeQueue feeds window sizes to the executor: the initial size, then
// every resize, until the session ends.
type sizeQueue struct {
	first  *remotecommand.TerminalSize
	resize <-chan session.WindowSize
	done   <-chan struct{}
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	if s := q.first; s != nil {
		q.first = nil
		return s
	}
	select {
	case ws, ok := <-q.resize:
		if !ok {
			<-q.done
			return nil
		}
		return &remotecommand.TerminalSize{Width: ws.Cols, Height: ws.Rows}
	case <-q.done:
		return nil
	}
}

// execIn runs r in pod and reports how it ended.
func (b *Backend) execIn(ctx context.Context, c *pods.Client, pod *corev1.Pod, inst *lifecycle.Instance, r session.Request) (session.ExitStatus, error) {
	token := newToken()
	pids := 0
	if p := c.Cluster().Pod.PidsLimit; p != nil {
		pids = *p
	}
	tty := r.TTY != nil
	helper := hasHelper(pod)

	// The session's context: cancelled when the caller's is, or when the
	// pod goes away.
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(errors.New("session over"))
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		select {
		case <-inst.Gone():
			cancel(errPodGone)
		case <-sctx.Done():
		}
	}()

	// Stdin is copied by a reader this backend owns (it may outlive Run;
	// see session.Request.Stdin) into a pipe that client-go reads.
	stdinR, stdinW := io.Pipe()
	defer stdinR.CloseWithError(io.ErrClosedPipe)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		_, err := session.Copy(stdinW, r.Stdin, nil)
		if tty && err == nil {
			// A terminal has no end of input: like sshd, keep it open
			// when the client sends EOF (ssh -tt host cmd </dev/null),
			// or the runtime hangs the process up before its output is
			// out. The end of Run closes it.
			return
		}
		stdinW.CloseWithError(err) // nil: EOF for the process
	}()

	so := remotecommand.StreamOptions{Stdin: stdinR, Stdout: r.Stdout, Tty: tty}
	if tty {
		so.TerminalSizeQueue = &sizeQueue{
			first:  &remotecommand.TerminalSize{Width: r.TTY.Size.Cols, Height: r.TTY.Size.Rows},
			resize: r.TTY.Resize,
			done:   sctx.Done(),
		}
	} else {
		so.Stderr = r.Stderr
		if so.Stderr == nil {
			so.Stderr = io.Discard
		}
	}

	if r.Signals != nil {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			for {
				select {
				case <-sctx.Done():
					return
				case sig, ok := <-r.Signals:
					if !ok {
						return
					}
					if name, known := signalNames[sig]; known {
						b.signal(sctx, c, pod, token, name, helper)
					}
				}
			}
		}()
	}

	var trailer *exitTrailer
	if helper {
		if so.Stdout == nil {
			so.Stdout = io.Discard // the trailer comes on stdout
		}
		trailer = newExitTrailer(so.Stdout, token)
		so.Stdout = trailer
	}
	err := c.Exec(sctx, pod, sessionCommand(r, token, pids, helper), so)
	if trailer != nil {
		st, ok, werr := trailer.end()
		switch {
		case ok && (st.Signal == "KILL" || st.Signal == "TERM") && isClosed(inst.Gone(), 300*time.Millisecond):
			return session.ExitStatus{}, podGoneError(c.Project(), pod, inst)
		case ok:
			return st, nil
		case werr != nil && err == nil:
			err = werr
		}
	}
	if err == nil {
		if !helper {
			// Without the helper nothing in the pod can tell a stream
			// cut before its status from an exit 0 (see endedWith).
			return session.ExitStatus{Code: 0}, nil
		}
		st, ok := b.endedWith(sctx, c, pod, token)
		if ok {
			return st, nil
		}
		err = errStreamCut
	}
	var ee utilexec.ExitError
	if errors.As(err, &ee) && sctx.Err() == nil {
		code := ee.ExitStatus()
		// Killed by SIGKILL or SIGTERM: perhaps because the pod is being
		// deleted, which its watch reports at once.
		if (code == 137 || code == 143) && isClosed(inst.Gone(), 300*time.Millisecond) {
			return session.ExitStatus{}, podGoneError(c.Project(), pod, inst)
		}
		if helper && code > 128 && code <= 128+64 {
			if st, ok := b.killedBy(sctx, c, pod, token); ok {
				return st, nil
			}
		}
		return session.ExitStatus{Code: code}, nil
	}
	// The stream ended without an exit status: the session was cut, the
	// pod went away, or the API server connection broke. Make sure the
	// process does not linger.
	cause := context.Cause(sctx)
	if !errors.Is(cause, errPodGone) {
		b.endProcesses(ctx, c, pod, token, helper)
	}
	switch {
	case errors.Is(cause, errPodGone):
	case ctx.Err() != nil:
		return session.ExitStatus{Signal: "HUP"}, nil
	case !isClosed(inst.Gone(), 2*time.Second):
		if errors.Is(err, errStreamCut) {
			ops.KubeAPIErrors.WithLabelValues(c.Project()).Inc()
			b.log.Warn("a session's exec stream was cut before its exit status; the user reads that the connection was lost",
				"pod", pod.Namespace+"/"+pod.Name)
			return session.ExitStatus{}, session.UserErrorf(fmt.Errorf("exec in %s/%s: %w", pod.Namespace, pod.Name, err),
				fmt.Sprintf("the connection to your shell in %s was lost; log in again", c.Project()))
		}
		if pods.Unavailable(err) {
			return session.ExitStatus{}, pods.UnavailableError(c.Project(), fmt.Errorf("exec in %s/%s: %w", pod.Namespace, pod.Name, err))
		}
		return session.ExitStatus{}, fmt.Errorf("exec in %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return session.ExitStatus{}, podGoneError(c.Project(), pod, inst)
}

var errPodGone = errors.New("the pod went away")

// errStreamCut: the exec's stream ended with success, but the helper has
// no record of the process exiting 0.
var errStreamCut = errors.New("the exec stream ended without the process's exit status")

// endedWith asks the helper how the session's process ended, after its
// exec reported success and the output held no trailer (exitTrailer).
// The exec API cannot be trusted with that: the API server writes
// Success to a WebSocket client whenever its own stream to the kubelet
// ended without a status (a cut stream: the container runtime restarting
// takes its streaming server down), and client-go's SPDY executor returns
// nil for an error stream that ended empty. `bastion-helper run` records
// an exit 0 (and a killing signal); no record means the process is still
// running, never ran, or went with the helper, and the stream was cut. A
// record that the process exited 0 after its trailer was written means
// the stream was cut after the exit, perhaps before the end of the
// output. ok is false in both cases, or when the helper cannot be asked
// for a while (the runtime is still down). A helper too old to record
// exits (a pod made before bastion was upgraded) prints nothing: exit 0,
// as before; one too old to write a trailer records a plain exit 0.
func (b *Backend) endedWith(ctx context.Context, c *pods.Client, pod *corev1.Pod, token string) (session.ExitStatus, bool) {
	b.log.Debug(noTrailer, "pod", pod.Namespace+"/"+pod.Name)
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusTimeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		out, err := runCommand(qctx, c, pod, helperPath, "status", token)
		if err == nil {
			line := strings.TrimSpace(out)
			st, a := statusAnswer(line)
			switch a {
			case cutAfterExit:
				b.log.Info("a session's process exited 0, but its exec stream was cut before the end of its output",
					"pod", pod.Namespace+"/"+pod.Name)
			case unexpected:
				b.log.Warn("unexpected answer from bastion-helper status", "pod", pod.Namespace+"/"+pod.Name, "output", line)
			}
			return st, a == ended
		}
		b.log.Debug("asking how a session ended", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		select {
		case <-qctx.Done():
			return session.ExitStatus{}, false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// What an answer of bastion-helper status says, when no trailer came.
type answer int

const (
	ended        answer = iota // the process ended so: the stream was cut after its status, or the helper records nothing
	notEnded                   // no record: the stream was cut before the process ended
	cutAfterExit               // it exited 0 and then wrote its trailer, which never came: the end of the output may be lost
	unexpected                 // an answer no helper gives
)

// statusAnswer reads bastion-helper status's line. An exit 0 whose
// trailer never came is not a success: the trailer follows the output on
// the same stream, so the output's end may have been cut with it (what
// one `echo ok` login in a containerd restart read as a silent exit 0).
func statusAnswer(line string) (session.ExitStatus, answer) {
	switch line {
	case "": // a helper that cannot record (or too old to)
		return session.ExitStatus{Code: 0}, ended
	case podhelper.NoRecord:
		return session.ExitStatus{}, notEnded
	case podhelper.Exited0Trailer:
		return session.ExitStatus{}, cutAfterExit
	}
	if st, ok := parseStatus(line); ok {
		return st, ended // exit 0 (a helper without trailers), or killed and the stream cut before its 128+N
	}
	return session.ExitStatus{}, unexpected
}

// noTrailer is endedWith's debug log: an exec stream ended without the
// helper's trailer (cut, or a helper too old to write one).
const noTrailer = "an exec ended without the helper's exit trailer; asking bastion-helper status"

// statusTimeout bounds endedWith: long enough for a container runtime
// that restarts to come back, and for an exec on a node starting 200
// pods at once (up to 12 s in the login storm; with 10 s, three clean
// exits read as cut streams).
const statusTimeout = 30 * time.Second

// isClosed waits up to d for ch to close.
func isClosed(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// signalNames are the RFC 4254 signals a session may send.
var signalNames = map[session.Signal]string{
	"ABRT": "ABRT", "ALRM": "ALRM", "FPE": "FPE", "HUP": "HUP", "ILL": "ILL", "INT": "INT",
	"KILL": "KILL", "PIPE": "PIPE", "QUIT": "QUIT", "SEGV": "SEGV", "TERM": "TERM",
	"USR1": "USR1", "USR2": "USR2",
}

// endProcesses ends every process of the session token in pod (see the
// comment at the top of this file). It outlives the session's context.
func (b *Backend) endProcesses(ctx context.Context, c *pods.Client, pod *corev1.Pod, token string, helper bool) {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	var err error
	if helper {
		_, err = runCommand(kctx, c, pod, helperPath, "hangup", token)
	} else {
		err = runScript(kctx, c, pod, killScript, token, "END")
	}
	if err != nil {
		b.log.Warn("could not end a session's processes", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
}

// signal sends sig to the session's leader process.
func (b *Backend) signal(ctx context.Context, c *pods.Client, pod *corev1.Pod, token, sig string, helper bool) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	if helper {
		_, err = runCommand(sctx, c, pod, helperPath, "signal", token, sig)
	} else {
		err = runScript(sctx, c, pod, killScript, token, sig)
	}
	if err != nil {
		b.log.Debug("signal", "signal", sig, "err", err)
	}
}

// killedBy asks the helper whether the session's process was killed by a
// signal (its exit code was 128+N) and which, when the output held no
// trailer.
func (b *Backend) killedBy(ctx context.Context, c *pods.Client, pod *corev1.Pod, token string) (session.ExitStatus, bool) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	out, err := runCommand(sctx, c, pod, helperPath, "status", token)
	if err != nil {
		b.log.Debug("exit signal unknown", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		return session.ExitStatus{}, false
	}
	return parseKilledBy(out)
}

// parseKilledBy reads the helper's status line, "NAME CORE" ("TERM 0").
func parseKilledBy(out string) (session.ExitStatus, bool) {
	f := strings.Fields(out)
	if len(f) != 2 || !signalName.MatchString(f[0]) || (f[1] != "0" && f[1] != "1") {
		return session.ExitStatus{}, false
	}
	return session.ExitStatus{Signal: session.Signal(f[0]), CoreDumped: f[1] == "1"}, true
}

var signalName = regexp.MustCompile(`^[A-Z0-9+]{1,16}$`)

// runCommand runs argv in pod, without stdin, and returns its output.
func runCommand(ctx context.Context, c *pods.Client, pod *corev1.Pod, argv ...string) (string, error) {
	out := pods.Output{Max: execOutputMax}
	if err := c.Exec(ctx, pod, argv, remotecommand.StreamOptions{Stdout: &out, Stderr: &out}); err != nil {
		return "", fmt.Errorf("%s: %w (output %q)", strings.Join(argv[:2], " "), err, out.String())
	}
	return out.String(), nil
}

// runScript runs sh -c script with args in pod, without stdin.
func runScript(ctx context.Context, c *pods.Client, pod *corev1.Pod, script string, args ...string) error {
	out := pods.Output{Max: execOutputMax}
	command := append([]string{"/bin/sh", "-c", script, "bastion"}, args...)
	if err := c.Exec(ctx, pod, command, remotecommand.StreamOptions{Stdout: &out, Stderr: &out}); err != nil {
		return fmt.Errorf("%w (output %q)", err, out.String())
	}
	return nil
}

// execOutputMax bounds what bastion keeps of a helper exec's output (for
// its error messages).
const execOutputMax = 4 << 10

package kube

import (
	"fmt"
	"io"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
	"github.com/bastion-ssh/bastion/session/kube/lifecycle"
)

// What the user reads: the start-up progress line of an interactive
// session, one-line notices, and why a shell could not start or went
// away. (The cluster being unavailable reads the same everywhere:
// pods.UnavailableError.)

// progress is the start-up line of an interactive session: it is shown
// only when the pod is not ready at once, and rewritten in place.
type progress struct {
	w       io.Writer // nil: not interactive
	project string
	start   time.Time
	mu      sync.Mutex
	last    string
	shown   bool
}

func newProgress(w io.Writer, project string) *progress {
	return &progress{w: w, project: project, start: time.Now()}
}

func (p *progress) set(state string) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if state == p.last {
		return
	}
	p.last, p.shown = state, true
	_, _ = fmt.Fprintf(p.w, "\r\x1b[Kbastion: starting your shell in %s... %s", p.project, state)
}

// done replaces a shown line with how long the start took.
func (p *progress) done() {
	p.end(func() string {
		return fmt.Sprintf("\r\x1b[Kbastion: your shell in %s is ready in %.1fs\r\n", p.project, time.Since(p.start).Seconds())
	})
}

// clear erases a shown line.
func (p *progress) clear() { p.end(func() string { return "\r\x1b[K" }) }

// end writes the last word over a shown line.
func (p *progress) end(last func() string) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		_, _ = io.WriteString(p.w, last())
		p.shown = false
	}
}

func phaseText(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			return "waiting for a node"
		}
	}
	if p.Spec.NodeName == "" {
		return "waiting for a node"
	}
	return "pulling the image and starting"
}

// noticeTo returns how a session's user is told something in one line:
// on the terminal for an interactive session, on stderr otherwise.
func noticeTo(r session.Request) func(string) {
	var w io.Writer
	eol := "\n"
	switch {
	case r.TTY != nil && r.Stdout != nil:
		w, eol = r.Stdout, "\r\n"
	case r.Stderr != nil:
		w = r.Stderr
	default:
		return nil
	}
	return func(line string) { _, _ = fmt.Fprintf(w, "bastion: %s%s", line, eol) }
}

// startProblem reports why pod can never start, if it cannot: the reason
// (for the log and the counters) and the line for the user.
func startProblem(project string, pod *corev1.Pod) (reason, msg string) {
	image := pods.Image(pod)
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch pods.Waiting(w.Reason) {
			case pods.PullFailed, pods.BadImageName:
				return w.Reason, fmt.Sprintf("the shell image %s is not available in %s; administrators have been alerted", image, project)
			case pods.SetupFailed:
				return w.Reason, fmt.Sprintf("your shell in %s cannot be set up (%s); administrators have been alerted", project, w.Reason)
			case pods.CrashLooping:
				return w.Reason, fmt.Sprintf("your shell in %s fails as it starts; administrators have been alerted", project)
			}
		}
		if tm := cs.State.Terminated; tm != nil {
			return "Terminated", fmt.Sprintf("your shell in %s exited as it started (%s); administrators have been alerted", project, tm.Reason)
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return c.Reason, fmt.Sprintf("no node in %s has room for your shell right now; try again in a few minutes", project)
		}
	}
	if pods.Finished(pod) {
		return "Pod" + string(pod.Status.Phase), fmt.Sprintf("your shell in %s stopped as it started; administrators have been alerted", project)
	}
	return "", ""
}

// podGoneError tells the user their pod went away under the session.
func podGoneError(project string, pod *corev1.Pod, inst *lifecycle.Instance) error {
	return session.UserErrorf(fmt.Errorf("pod %s/%s %s", pod.Namespace, pod.Name, inst.Reason()),
		fmt.Sprintf("your shell pod in %s %s; log in again to get a new one", project, inst.Reason()))
}

// detachedNotice tells a user logging out that n detached processes
// (tmux, nohup, ...) keep their shell pod for up to keep.
func detachedNotice(project string, n int, keep time.Duration) string {
	what := "1 detached process keeps"
	if n != 1 {
		what = fmt.Sprintf("%d detached processes keep", n)
	}
	return fmt.Sprintf("%s your shell in %s running for up to %s after you log out", what, project, humanDuration(keep))
}

// humanDuration writes d in whole days or hours when it is some.
func humanDuration(d time.Duration) string {
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case d >= 24*time.Hour && d%(24*time.Hour) == 0:
		return plural(int64(d/(24*time.Hour)), "day")
	case d >= time.Hour && d%time.Hour == 0:
		return plural(int64(d/time.Hour), "hour")
	}
	return d.String()
}

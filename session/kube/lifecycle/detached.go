package lifecycle

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// Detached work keeps an idle pod (see the package comment): a process of
// the account other than the pod's own, as detached.sh decides. The scan
// is one exec of /bin/sh with that script, so it works in any image with a
// POSIX shell, with or without bastion-helper, and starts no process.

//go:embed detached.sh
var detachedScript string

// AnnoDetached records the last scan of a kept pod: {"n":PROCESSES,
// "t":UNIX-SECONDS}. Every replica reads it, so that a pod is scanned
// once per recheck interval whichever replica sweeps it, and a bastion
// that restarts goes on from the cluster's state.
const AnnoDetached = "bastion.io/detached"

// maxListed bounds the processes a scan reports (the count is exact up to
// it; the names go to the log).
const maxListed = 64

// Detached is what a scan found: the detached processes' PIDs and names
// (at most maxListed).
type Detached struct {
	Procs []string // "PID COMM"
}

// N is how many detached processes the scan found.
func (d Detached) N() int { return len(d.Procs) }

// Names is a short list of the processes' names for a log line.
func (d Detached) Names() string {
	seen := map[string]bool{}
	var names []string
	for _, p := range d.Procs {
		_, name, _ := strings.Cut(p, " ")
		if !seen[name] && len(names) < 8 {
			seen[name] = true
			names = append(names, name)
		}
	}
	return strings.Join(names, ",")
}

// ScanDetached lists the account's detached processes in pod.
func ScanDetached(ctx context.Context, c *pods.Client, pod *corev1.Pod) (Detached, error) {
	out, errOut := pods.Output{Max: 16 << 10}, pods.Output{Max: 16 << 10}
	argv := []string{"/bin/sh", "-c", detachedScript, "bastion"}
	if err := c.Exec(ctx, pod, argv, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}); err != nil {
		return Detached{}, fmt.Errorf("scan %s/%s for detached processes: %w (stderr %q)", pod.Namespace, pod.Name, err, errOut.String())
	}
	return parseDetached(out.String()), nil
}

// parseDetached reads detached.sh's output; lines that are not "PID COMM"
// (a cut-off last line) are skipped.
func parseDetached(out string) Detached {
	var d Detached
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\n")
		pid, name, ok := strings.Cut(line, " ")
		if _, err := strconv.Atoi(pid); !ok || err != nil || name == "" {
			continue
		}
		if len(d.Procs) == maxListed {
			break
		}
		d.Procs = append(d.Procs, line)
	}
	return d
}

// detachedRecord is AnnoDetached's value.
type detachedRecord struct {
	N int   `json:"n"`
	T int64 `json:"t"`
}

func detachedPatch(n int, now time.Time) ([]byte, error) {
	v, _ := json.Marshal(detachedRecord{N: n, T: now.Unix()})
	p := map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnoDetached: string(v)}}}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("detached patch: %w", err)
	}
	return data, nil
}

// keep is what the sweep does with an idle pod, as far as detached work
// goes.
type keep int

const (
	reapIt   keep = iota // no detached work keeps it
	scanIt               // look for detached processes in it
	keepIt               // a recent scan found detached processes
	tooOldIt             // idle past detached_max_age: reaped as if none ran
)

// detachedVerdict decides, from the pod alone, what to do with a pod
// idle since last: with maxAge 0, detached work keeps nothing; past
// maxAge, nothing keeps it; a scan younger than recheck that found
// detached processes keeps it; otherwise it is scanned.
func detachedVerdict(pod *corev1.Pod, last, now time.Time, maxAge, recheck time.Duration) keep {
	switch {
	case maxAge <= 0:
		return reapIt
	case now.Sub(last) >= maxAge:
		return tooOldIt
	}
	var r detachedRecord
	if v, ok := pod.Annotations[AnnoDetached]; ok && json.Unmarshal([]byte(v), &r) == nil {
		at := time.Unix(r.T, 0)
		if age := now.Sub(at); r.N > 0 && at.After(last) && age < recheck && age > -recheck {
			return keepIt
		}
	}
	return scanIt
}

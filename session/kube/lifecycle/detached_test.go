package lifecycle

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeProc is one process of a fake /proc for detached.sh.
type fakeProc struct {
	pid, ppid, sid int
	comm           string
	state          string
	sigIgn         string // /proc/PID/status SigIgn mask
}

// TestDetachedScript runs detached.sh with the real sh (and bash, where
// installed) over a fake /proc with every kind of process a shell pod
// has, and checks which it calls detached work.
func TestDetachedScript(t *testing.T) {
	t.Parallel()
	procs := []fakeProc{
		{1, 0, 1, "sh", "S", "0000000000000000"},               // the pod's sleeper
		{7, 1, 1, "sleep", "S", "0000000000000006"},            // its sleep
		{20, 0, 20, "bash", "S", "0000000000000000"},           // a session's shell (exec'd): open session
		{21, 20, 20, "vim", "S", "0000000000000000"},           // in the open session
		{22, 20, 20, "sleep", "S", "0000000000000007"},         // nohup'd in the open session
		{23, 20, 20, "make", "S", "0000000000000006"},          // a background job of an open session
		{30, 1, 30, "tmux: server", "S", "0000000000001000"},   // tmux's server: left its session
		{31, 30, 31, "bash", "S", "0000000000000000"},          // a tmux pane
		{32, 31, 31, "sleep", "S", "0000000000000000"},         // in the pane
		{40, 1, 35, "sleep", "S", "0000000000000001"},          // nohup'd, its session's shell gone
		{41, 1, 35, "python3", "S", "0000000000000000"},        // a job left at logout
		{42, 1, 42, "odd) name (x", "S", "0000000000000000"},   // setsid, with ") " in its name
		{43, 1, 35, "defunct", "Z", "0000000000000000"},        // a zombie
		{50, 0, 50, "bastion-helper", "S", "0000000000000000"}, // a probe or the helper (exec'd)
		{51, 50, 50, "sh", "S", "0000000000000000"},            // in its session
		{60, 0, 60, "sh", "R", "0000000000000000"},             // this scan
	}
	root := t.TempDir()
	for _, p := range procs {
		d := filepath.Join(root, strconv.Itoa(p.pid))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		stat := strconv.Itoa(p.pid) + " (" + p.comm + ") " + p.state + " " + strconv.Itoa(p.ppid) + " " + strconv.Itoa(p.sid) + " " + strconv.Itoa(p.sid) + " 34816 0 -1 4194560\n"
		status := "Name:\t" + p.comm + "\nState:\t" + p.state + "\nSigQ:\t0/63413\nSigPnd:\t0000000000000000\nSigBlk:\t0000000000000000\nSigIgn:\t" + p.sigIgn + "\nSigCgt:\t0000000000010002\n"
		if err := os.WriteFile(filepath.Join(d, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A process that went away between the listing and the read.
	if err := os.Mkdir(filepath.Join(root, "99"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := []string{"22 sleep", "30 tmux: server", "31 bash", "32 sleep", "40 sleep", "41 python3", "42 odd) name (x"}
	for _, sh := range []string{"/bin/sh", "/bin/bash", "/bin/dash"} {
		if _, err := os.Stat(sh); err != nil {
			continue
		}
		out, err := exec.Command(sh, "-c", detachedScript, "bastion", root).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", sh, err, out)
		}
		got := parseDetached(string(out)).Procs
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s found\n%q\nwant\n%q\n(output %q)", sh, got, want, out)
		}
	}
}

func TestParseDetached(t *testing.T) {
	t.Parallel()
	tests := []struct {
		out  string
		want int
	}{
		{"", 0},
		{"12 tmux: server\n13 sleep\n", 2},
		{"12 sleep\nnot a line\n\n13\n14 cut-off", 2},
		{strings.Repeat("1 sleep\n", 100), maxListed},
	}
	for _, tt := range tests {
		if got := parseDetached(tt.out).N(); got != tt.want {
			t.Errorf("parseDetached(%q) = %d processes, want %d", tt.out, got, tt.want)
		}
	}
	d := parseDetached("1 tmux: server\n2 sleep\n3 sleep\n")
	if d.Names() != "tmux: server,sleep" {
		t.Errorf("names %q", d.Names())
	}
}

// TestDetachedVerdict: what the sweep does with a pod idle since last,
// from its detached annotation alone.
func TestDetachedVerdict(t *testing.T) {
	t.Parallel()
	now := time.Now()
	const maxAge, recheck = 7 * 24 * time.Hour, 5 * time.Minute
	rec := func(n int, ago time.Duration) map[string]string {
		return map[string]string{AnnoDetached: `{"n":` + strconv.Itoa(n) + `,"t":` + strconv.FormatInt(now.Add(-ago).Unix(), 10) + `}`}
	}
	tests := []struct {
		name   string
		idle   time.Duration
		maxAge time.Duration
		anno   map[string]string
		want   keep
	}{
		{"never scanned", time.Hour, maxAge, nil, scanIt},
		{"recent scan found some", time.Hour, maxAge, rec(2, time.Minute), keepIt},
		{"recent scan found none", time.Hour, maxAge, rec(0, time.Minute), scanIt},
		{"scan due again", time.Hour, maxAge, rec(2, 6*time.Minute), scanIt},
		{"scan older than the last session", 2 * time.Minute, maxAge, rec(2, 3*time.Minute), scanIt},
		{"scan from the future", time.Hour, maxAge, rec(2, -time.Hour), scanIt},
		{"garbage annotation", time.Hour, maxAge, map[string]string{AnnoDetached: "{"}, scanIt},
		{"past the max age", maxAge, maxAge, rec(2, time.Minute), tooOldIt},
		{"just before the max age", maxAge - time.Second, maxAge, rec(2, time.Minute), keepIt},
		{"detached work keeps nothing", time.Hour, 0, rec(2, time.Minute), reapIt},
	}
	for _, tt := range tests {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: tt.anno}}
		if got := detachedVerdict(pod, now.Add(-tt.idle), now, tt.maxAge, recheck); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}

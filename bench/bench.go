package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// bench is one run.
type bench struct {
	opt      options
	out      io.Writer
	start    time.Time
	deadline time.Time

	root       string // module root
	dir        string // temporary directory (on tmpfs when there is one)
	tools      tools
	me         account
	bastionBin string
	revName    string // "commit abc1234" with -rev

	keyPath, hostKeyPath, sshConfig string
	dbclient, dropbearKey           string // for the dropbear variant
	signer                          ssh.Signer
	servers                         []*server // OpenSSH, bastion

	env           envInfo
	negotiatedAll map[string]string // "server, cipher variant" → kex and cipher
	results       []*result
	skipped       []string
}

// result is one row of the table.
type result struct {
	ID     string `json:"id"`
	Group  string `json:"group"`
	Title  string `json:"title"`
	Cipher string `json:"cipher,omitempty"`
	Unit   string `json:"unit"`
	// Better is "lower" or "higher".
	Better string    `json:"better"`
	Target *target   `json:"target,omitempty"`
	A      []float64 `json:"openssh"`
	B      []float64 `json:"bastion"`
	MedA   float64   `json:"median_openssh"`
	MedB   float64   `json:"median_bastion"`
	Ratio  float64   `json:"ratio"`
	Met    *bool     `json:"target_met,omitempty"`
	// Extra holds per-server details (CPU, errors, process counts).
	Extra map[string]any `json:"extra,omitempty"`
	order int
}

// target is a goal to report against: a bound on the ratio
// bastion/OpenSSH ("ratio") or on bastion's own value ("value").
type target struct {
	On    string  `json:"on"` // "ratio" or "value"
	Op    string  `json:"op"` // "<=", ">=", "<"
	Bound float64 `json:"bound"`
	Text  string  `json:"text"`
}

func (t *target) met(r *result) bool {
	v := r.Ratio
	if t.On == "value" {
		v = r.MedB
	}
	switch t.Op {
	case "<=":
		return v <= t.Bound
	case "<":
		return v < t.Bound
	default:
		return v >= t.Bound
	}
}

func (r *result) finish() {
	r.MedA, r.MedB = median(r.A), median(r.B)
	if r.MedA > 0 {
		r.Ratio = r.MedB / r.MedA
	}
	if r.Target != nil && len(r.A) > 0 && len(r.B) > 0 {
		ok := r.Target.met(r)
		r.Met = &ok
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.out, "[%5.0fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// run is the whole bench; it returns the exit code.
func (b *bench) run(ctx context.Context) int {
	fail := func(err error) int {
		if ctx.Err() != nil {
			return 0 // interrupted; run() reports it
		}
		fmt.Fprintf(b.out, "bench: %v\n", err)
		return 1
	}
	var err error
	if b.tools, err = findTools(); err != nil {
		return fail(err)
	}
	if b.root, err = moduleRoot(); err != nil {
		return fail(err)
	}
	if b.me, err = currentAccount(); err != nil {
		return fail(err)
	}
	if err := checkPort("OpenSSH's sshd", b.opt.sshdPort, "-sshd-port"); err != nil {
		return fail(err)
	}
	if err := checkPort("bastion", b.opt.bastionPort, "-bastion-port"); err != nil {
		return fail(err)
	}

	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm" // transfers read and write files: keep the disk out of it
	}
	if b.dir, err = os.MkdirTemp(base, "bastion-bench-"); err != nil {
		return fail(err)
	}
	becomeSubreaper()
	defer func() {
		for _, s := range b.servers {
			s.stop()
		}
		sweep()
		if b.opt.keep {
			fmt.Fprintf(b.out, "kept %s\n", b.dir)
		} else {
			os.RemoveAll(b.dir)
		}
	}()

	gitDir := b.root
	if b.opt.bastionBin != "" {
		b.bastionBin = b.opt.bastionBin
		gitDir = filepath.Dir(b.bastionBin)
	} else {
		b.bastionBin = filepath.Join(b.dir, "bastion")
		src := b.root
		if b.opt.rev != "" {
			if src, err = b.checkout(ctx, b.opt.rev); err != nil {
				return fail(err)
			}
			gitDir = ""
		}
		b.logf("building bastion from %s", src)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.bastionBin, "./cmd/bastion")
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("go build ./cmd/bastion in %s: %v\n%s", src, err, out))
		}
	}
	if err := b.setup(); err != nil {
		return fail(err)
	}
	b.env = collectEnv(ctx, b.tools, gitDir, b.bastionBin)
	if b.opt.rev != "" {
		b.env.Bastion += ", built from " + b.revName
	}
	b.env.Quick = b.opt.quick
	for _, s := range b.servers {
		if err := s.start(ctx); err != nil {
			return fail(err)
		}
		b.logf("%s listening on %s (%s)", s.name, s.addr(), s.banner)
	}
	b.env.Sshd = b.servers[0].banner
	b.negotiatedAll = map[string]string{}
	for _, s := range b.servers {
		for _, c := range b.opt.ciphers {
			b.negotiatedAll[s.name+" ("+cipherLabel(c)+")"] = b.negotiated(ctx, s, c)
		}
	}

	// The order spends the budget on the few long-running cases first,
	// so that a slow machine loses throughput variants, not whole cases.
	steps := []struct {
		group string
		run   func(context.Context) error
	}{
		{"login", b.caseLogin},
		{"handshake", b.caseHandshake},
		{"idle", b.caseIdle},
		{"stream", b.caseStream},
		{"forward", b.caseForward},
		{"scp", b.caseSCP},
		{"sftp", b.caseSFTP},
	}
	runCtx, cancel := context.WithDeadline(ctx, b.deadline)
	defer cancel()
	for _, st := range steps {
		if !b.opt.cases[st.group] {
			continue
		}
		if err := st.run(runCtx); err != nil {
			if ctx.Err() != nil {
				return 0
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errBudget) {
				b.skipped = append(b.skipped, st.group+": time budget exhausted")
				continue
			}
			return fail(fmt.Errorf("%s: %w", st.group, err))
		}
	}
	b.report()
	return 0
}

// checkout extracts rev of the module into the temp directory.
func (b *bench) checkout(ctx context.Context, rev string) (string, error) {
	out, err := exec.CommandContext(ctx, "git", "-C", b.root, "rev-parse", "--short", rev+"^{commit}").Output()
	if err != nil {
		return "", fmt.Errorf("-rev %s: not a commit of %s", rev, b.root)
	}
	b.revName = "commit " + strings.TrimSpace(string(out))
	dst := filepath.Join(b.dir, "src")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", err
	}
	sh := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive --format=tar "$2" | tar -x -C "$3"`, "sh", b.root, rev, dst)
	if out, err := sh.CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive %s: %v\n%s", rev, err, out)
	}
	return dst, nil
}

var errBudget = errors.New("not enough time left in the budget")

// left reports whether d fits in what is left of the budget.
func (b *bench) left(d time.Duration) bool { return time.Until(b.deadline) > d }

func (b *bench) add(r *result) {
	r.finish()
	r.order = len(b.results)
	b.results = append(b.results, r)
	b.logf("  %-44s OpenSSH %9.2f  bastion %9.2f %-8s ratio %.2f×", r.Title+" "+r.Cipher, r.MedA, r.MedB, r.Unit, r.Ratio)
	if b.opt.verbose {
		b.logf("    samples OpenSSH %v bastion %v", fmtSamples(r.A), fmtSamples(r.B))
	}
}

func fmtSamples(xs []float64) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = fmt.Sprintf("%.2f", x)
	}
	return out
}

// alternate runs f against OpenSSH and bastion in turn: one warm-up each,
// then reps rounds of A B.
func (b *bench) alternate(ctx context.Context, warm bool, reps int, f func(ctx context.Context, s *server, warm bool) (float64, error)) (a, bb []float64, err error) {
	if warm {
		for _, s := range b.servers {
			if _, err := f(ctx, s, true); err != nil {
				return nil, nil, fmt.Errorf("%s (warm-up): %w", s.name, err)
			}
		}
	}
	for i := 0; i < reps; i++ {
		for j, s := range b.servers {
			v, err := f(ctx, s, false)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", s.name, err)
			}
			if j == 0 {
				a = append(a, v)
			} else {
				bb = append(bb, v)
			}
		}
	}
	return a, bb, nil
}

// Command bench measures bastion side by side with OpenSSH's sshd on this
// machine and writes the medians and ratios to docs/benchmarks.md (and the
// raw numbers to docs/benchmarks.json).
//
//	go run ./bench            # the full run: about 13 minutes, never more than 20
//	go run ./bench -quick     # a short run with smaller sizes
//	go run ./bench -cases login,handshake
//	go run ./bench soak -quick  # the soak (bench/soak.go), bastion alone
//
// It installs nothing: it checks for sshd and the clients and says what to
// install. Both servers listen on 127.0.0.1 only, run as the current user's
// account with the same host key and authorized key, and are stopped (with
// every process they started) when the run ends, fails or is interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// budget is the hard limit of one run; cases that would not finish in
// time are skipped and reported as such (and docs/ is then not written).
//
// A full run with the five throughput variants (client defaults,
// aes128-gcm, chacha20-poly1305, aes128-ctr, Dropbear's client) has 46
// rows; on this 2-core machine it took about 12.5 minutes while other jobs
// loaded it (setup, login, handshake and idle 2.6 min; streams 2.3;
// ssh -L 1.7; scp 3.6; sftp 2.3) and is shorter on a quiet one. The budget
// leaves room for a slow machine without letting a run go on for ever.
const budget = 20 * time.Minute

type options struct {
	quick       bool
	cases       map[string]bool
	ciphers     []string
	sshdPort    int
	bastionPort int
	outDir      string
	write       bool
	bastionBin  string
	keep        bool
	reps        int
	budget      time.Duration
	verbose     bool
	realHome    bool
	rev         string
	render      bool
}

// groups are the case groups -cases selects, in run order.
var groups = []struct{ name, help string }{
	{"login", "ssh host true, whole client process"},
	{"stream", "512 MiB in (cat > /dev/null) and out (head -c 512M /dev/zero)"},
	{"scp", "scp (SFTP mode) and scp -O, put and get of a 512 MiB file"},
	{"sftp", "sftp put and get of a 512 MiB file; also with bastion's built-in sftp-server (aes128-gcm)"},
	{"forward", "1 GiB through ssh -L to a local sink"},
	{"handshake", "authenticated connections per second, 32 Go workers, and server CPU"},
	{"idle", "memory per idle shell session at 500 and 2000 sessions"},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "soak" {
		return runSoak(args[1:], stdout, stderr)
	}
	opt, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	b := &bench{opt: opt, out: stdout, start: time.Now()}
	if opt.render {
		if err := b.rerender(); err != nil {
			fmt.Fprintf(stderr, "bench: -render: %v\n", err)
			return 1
		}
		return 0
	}
	b.deadline = b.start.Add(opt.budget)
	code := b.run(ctx)
	if ctx.Err() != nil && code == 0 {
		fmt.Fprintln(stderr, "bench: interrupted; servers stopped")
		return 130
	}
	return code
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var names []string
	for _, g := range groups {
		names = append(names, g.name)
	}
	quick := fs.Bool("quick", false, "short run: smaller transfers, fewer repetitions, 50/200 idle sessions")
	cases := fs.String("cases", "all", "comma-separated case groups: "+strings.Join(names, ", "))
	ciphers := fs.String("ciphers", "default,aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,dropbear",
		"throughput variants: \"default\" is the OpenSSH client's own choice, a cipher name is forced with -c (-ctr ciphers with -o MACs=hmac-sha2-256-etm@openssh.com), \"dropbear\" is Dropbear's dbclient with its defaults (stream rows only)")
	sshdPort := fs.Int("sshd-port", 2201, "loopback port for OpenSSH's sshd")
	bastionPort := fs.Int("bastion-port", 2202, "loopback port for bastion")
	outDir := fs.String("out", "", "write benchmarks.md and benchmarks.json here (default: docs/ of the module, and only after a full run of every case)")
	noWrite := fs.Bool("n", false, "print the table only; do not write docs/")
	bin := fs.String("bastion", "", "use this bastion binary instead of building ./cmd/bastion")
	render := fs.Bool("render", false, "rewrite benchmarks.md from benchmarks.json and bench/notes.md without measuring")
	rev := fs.String("rev", "", "build bastion from this git revision (e.g. HEAD) instead of the working tree, which others may be editing")
	keep := fs.Bool("keep", false, "keep the temporary directory (configs, logs) for inspection")
	reps := fs.Int("reps", 0, "rounds of A B per case (default: 3, 2 for scp and sftp, 1 with -quick; login always 20)")
	verbose := fs.Bool("v", false, "print every sample")
	realHome := fs.Bool("real-home", false, "give the shells the user's real home and rc files (default: an empty temporary home, for both servers)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./bench [flags]\n\nCompares bastion with OpenSSH's sshd on loopback; writes docs/benchmarks.md and .json.\n\ncase groups:\n")
		for _, g := range groups {
			fmt.Fprintf(stderr, "  %-10s %s\n", g.name, g.help)
		}
		fmt.Fprintf(stderr, "\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	opt := options{
		quick: *quick, sshdPort: *sshdPort, bastionPort: *bastionPort, outDir: *outDir,
		write: !*noWrite, bastionBin: *bin, keep: *keep, reps: *reps, budget: budget, verbose: *verbose, realHome: *realHome, rev: *rev, render: *render,
		cases: map[string]bool{},
	}
	for _, c := range strings.Split(*cases, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if c == "all" {
			for _, n := range names {
				opt.cases[n] = true
			}
			continue
		}
		known := false
		for _, n := range names {
			known = known || n == c
		}
		if !known {
			return options{}, fmt.Errorf("-cases: unknown case %q (known: all, %s)", c, strings.Join(names, ", "))
		}
		opt.cases[c] = true
	}
	if len(opt.cases) == 0 {
		return options{}, errors.New("-cases: nothing selected")
	}
	for _, c := range strings.Split(*ciphers, ",") {
		if c = strings.TrimSpace(c); c != "" {
			opt.ciphers = append(opt.ciphers, c)
		}
	}
	if len(opt.ciphers) == 0 {
		opt.ciphers = []string{"default"}
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"-sshd-port", opt.sshdPort}, {"-bastion-port", opt.bastionPort}} {
		if p.v < 1 || p.v > 65535 {
			return options{}, fmt.Errorf("%s: %d is not a port", p.name, p.v)
		}
	}
	if opt.sshdPort == opt.bastionPort {
		return options{}, errors.New("-sshd-port and -bastion-port must differ")
	}
	if opt.reps < 0 {
		return options{}, errors.New("-reps must be positive")
	}
	if opt.bastionBin != "" && opt.rev != "" {
		return options{}, errors.New("-bastion and -rev exclude each other")
	}
	if opt.bastionBin != "" {
		abs, err := filepath.Abs(opt.bastionBin)
		if err != nil {
			return options{}, err
		}
		opt.bastionBin = abs
	}
	return opt, nil
}

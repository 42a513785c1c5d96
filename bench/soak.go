package main

// The soak: `go run ./bench soak` holds many concurrent SSH sessions on
// one bastion (local backend, loopback) for a fixed time, with new logins
// arriving at a fixed rate on top, moves checksummed data through every
// session, and reports what was moved and lost, login latency, and the
// server's memory, goroutines and CPU per interval.

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// soakOptions are the soak's flags.
type soakOptions struct {
	sessions   int           // concurrent sessions held for the whole run
	duration   time.Duration // of the load, ramp included
	loginRate  float64       // new logins per second on top
	interval   time.Duration // of the report's rows
	openssh    int           // concurrent OpenSSH scp/sftp workers
	rate       int           // bytes per second per session, each way
	ramp       float64       // sessions opened per second at the start
	port       int
	bastionBin string
	out        string // file whose soak block is replaced with the report
	keep       bool
	quick      bool
	command    string // as typed, for the report

	// Seams for tests: another directory (the YAML of the directory
	// section and its own, e.g. ldap) and the user and key the clients
	// log in with; faults injected while the load runs.
	directory string
	user      string
	signer    ssh.Signer
	faults    []soakFault

	// Seams for other backends (the kube soak in soak_kube_test.go):
	// the backend's name for the report, more config sections (backend,
	// forwarding, kube), the accounts the sessions and logins take in
	// turn (all with signer; empty: user), where the ssh -L streams go
	// (empty: the loopback echo server), a command each login also runs
	// (empty: the login only authenticates), a note per report row (e.g.
	// the cluster's pods) and the end's own checks (e.g. leaked pods).
	backend      string
	extraConfig  string
	accounts     []string
	forwardTo    string
	loginCommand string
	observe      func(ctx context.Context, metrics map[string]float64) string
	finalCheck   func(ctx context.Context, metrics func(context.Context) (map[string]float64, error)) (notes, problems []string)
	// allRunning, when set, is called once, with bastion's metrics, at
	// the moment every session first has its command running (the pty's
	// cat started, the exec's first output, the forward open).
	allRunning func(metrics map[string]float64)
	block      string // the -out block's name (default "soak")

	// Faults that end sessions or refuse logins on purpose (chaos): a
	// session of an account for which expectCut says yes when it fails
	// counts as ended by the fault, with what its user read, not as a
	// failure, and its chunk in flight as cut, not lost; a login error
	// that expectedLogin accepts counts as refused as expected.
	expectCut     func(account string) bool
	expectedLogin func(err error) bool
}

// soakFault is something done to the world at a time into the load, such
// as stopping the LDAP server.
type soakFault struct {
	at   time.Duration
	name string
	do   func()
	act  func(context.Context, *soakWorld) error // instead of do, for faults of bastion itself
}

func parseSoakFlags(args []string, stderr io.Writer) (soakOptions, error) {
	fs := flag.NewFlagSet("bench soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "a short run: 100 sessions for 30s, 10 logins/s, 10s rows (unless set otherwise)")
	sessions := fs.Int("sessions", 1000, "concurrent sessions (40% pty through cat, 30% exec cat, 30% ssh -L to an echo server)")
	duration := fs.Duration("duration", 10*time.Minute, "how long the load runs (ramp included); the run then drains and stops by itself")
	loginRate := fs.Float64("login-rate", 50, "new logins per second on top of the sessions")
	interval := fs.Duration("interval", time.Minute, "one report row per interval")
	openssh := fs.Int("openssh", 4, "concurrent workers copying files with OpenSSH's scp, scp -O and sftp")
	rate := fs.Int("rate", 2048, "bytes per second per session, each way (paced in random chunks)")
	ramp := fs.Float64("ramp", 100, "sessions opened per second at the start")
	port := fs.Int("port", 0, "loopback port for bastion (0: a free one)")
	bin := fs.String("bastion", "", "use this bastion binary instead of building ./cmd/bastion")
	out := fs.String("out", "", "replace the soak block of this markdown file (e.g. docs/reliability.md) with the report")
	keep := fs.Bool("keep", false, "keep the temporary directory (configs, bastion's log)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./bench soak [flags]\n\nHolds many SSH sessions on a local bastion and checks every byte; see docs/reliability.md.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return soakOptions{}, err
	}
	if fs.NArg() > 0 {
		return soakOptions{}, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	o := soakOptions{sessions: *sessions, duration: *duration, loginRate: *loginRate, interval: *interval,
		openssh: *openssh, rate: *rate, ramp: *ramp, port: *port, bastionBin: *bin, out: *out, keep: *keep, quick: *quick,
		command: "go run ./bench soak " + strings.Join(args, " ")}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["sessions"] {
			o.sessions = 100
		}
		if !set["duration"] {
			o.duration = 30 * time.Second
		}
		if !set["login-rate"] {
			o.loginRate = 10
		}
		if !set["interval"] {
			o.interval = 10 * time.Second
		}
		if !set["openssh"] {
			o.openssh = 2
		}
	}
	switch {
	case o.sessions < 1:
		return o, errors.New("-sessions must be at least 1")
	case o.duration < 5*time.Second:
		return o, errors.New("-duration must be at least 5s")
	case o.loginRate < 0 || o.openssh < 0 || o.rate < 1 || o.ramp <= 0:
		return o, errors.New("-login-rate and -openssh must not be negative; -rate and -ramp must be positive")
	case o.interval < time.Second:
		return o, errors.New("-interval must be at least 1s")
	case o.port < 0 || o.port > 65535:
		return o, fmt.Errorf("-port: %d is not a port", o.port)
	}
	if o.bastionBin != "" {
		abs, err := filepath.Abs(o.bastionBin)
		if err != nil {
			return o, err
		}
		o.bastionBin = abs
	}
	return o, nil
}

// runSoak is `bench soak`: it returns the exit status (1 when a byte was
// lost or corrupted, a process or goroutine leaked, or a session failed).
func runSoak(args []string, stdout, stderr io.Writer) int {
	opt, err := parseSoakFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "bench soak: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	rep, err := soak(ctx, opt, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "bench soak: %v\n", err)
		return 1
	}
	md := rep.markdown()
	fmt.Fprintln(stdout, md)
	if opt.out != "" {
		if err := replaceBlock(opt.out, opt.block, md); err != nil {
			fmt.Fprintf(stderr, "bench soak: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote the soak block of %s\n", opt.out)
	}
	if problems := rep.problems(); len(problems) > 0 {
		fmt.Fprintf(stderr, "bench soak: FAILED:\n  %s\n", strings.Join(problems, "\n  "))
		return 1
	}
	return 0
}

// soakWorld is the bastion under test and what the clients need.
type soakWorld struct {
	dir        string
	bin        string
	srv        *server
	opsAddr    string
	signer     ssh.Signer
	user       string
	keyPath    string
	sshConfig  string
	tools      tools
	echo       net.Listener
	echoWG     sync.WaitGroup
	bastionRev string
}

// startSoakWorld builds (unless given) and starts bastion on loopback.
func startSoakWorld(ctx context.Context, opt soakOptions, logf func(string, ...any)) (*soakWorld, error) {
	t, err := findTools()
	if err != nil && (t.ssh == "" || t.scp == "" || t.sftp == "" || t.sftpServer == "") {
		return nil, err
	}
	me, err := currentAccount()
	if err != nil {
		return nil, err
	}
	base := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		base = "/dev/shm"
	}
	dir, err := os.MkdirTemp(base, "bastion-soak-")
	if err != nil {
		return nil, err
	}
	w := &soakWorld{dir: dir, tools: t, user: me.name}
	fail := func(err error) (*soakWorld, error) { w.close(opt.keep); return nil, err }

	w.bin = opt.bastionBin
	if w.bin == "" {
		root, err := moduleRoot()
		if err != nil {
			return fail(err)
		}
		w.bin = filepath.Join(dir, "bastion")
		logf("building bastion from %s", root)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", w.bin, "./cmd/bastion")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("go build ./cmd/bastion: %v\n%s", err, out))
		}
	}
	gitDir := ""
	if opt.bastionBin == "" {
		gitDir, _ = moduleRoot()
	}
	w.bastionRev = bastionVersion(ctx, gitDir, w.bin)

	// bastion's files in a directory of their own: it watches the
	// directories of its config and keys, and the copies and its log
	// change all the time.
	etc := filepath.Join(dir, "etc")
	if err := os.Mkdir(etc, 0o700); err != nil {
		return fail(err)
	}
	// Keys: one user key for every client, one host key.
	for _, k := range []string{"id_ed25519", "ssh_host_ed25519_key"} {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return fail(err)
		}
		block, err := ssh.MarshalPrivateKey(priv, "soak")
		if err != nil {
			return fail(err)
		}
		path := filepath.Join(etc, k)
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			return fail(err)
		}
		signer, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			return fail(err)
		}
		if k == "id_ed25519" {
			w.signer, w.keyPath = signer, path
			if err := os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
				return fail(err)
			}
		}
	}
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return fail(err)
	}
	if err := os.Chown(home, me.uid, me.gid); err != nil && os.Geteuid() == 0 {
		return fail(err)
	}
	users := filepath.Join(etc, "users.yaml")
	data := fmt.Sprintf("users:\n  - name: %s\n    uid: %d\n    gid: %d\n    home: %s\n    shell: /bin/sh\n    key_files: [%s]\n",
		me.name, me.uid, me.gid, home, w.keyPath+".pub")
	if err := os.WriteFile(users, []byte(data), 0o600); err != nil {
		return fail(err)
	}
	directory := "directory:\n  type: static\n  file: " + users + "\n"
	if opt.directory != "" {
		directory = opt.directory
		w.user, w.signer = opt.user, opt.signer
	}
	port := opt.port
	if port == 0 {
		if port, err = freePort(); err != nil {
			return fail(err)
		}
	}
	opsPort, err := freePort()
	if err != nil {
		return fail(err)
	}
	w.opsAddr = fmt.Sprintf("127.0.0.1:%d", opsPort)
	cfg := fmt.Sprintf(`# written by go run ./bench soak
ssh:
  listen: 127.0.0.1:%d
  host_keys: [%s]
  sftp_server: %s
%s
limits:
  # Every client comes from 127.0.0.1: the per-source limits and the
  # penalties would throttle the load generator itself.
  max_startups: "10000"
  per_source_max_startups: 10000
  max_conns_per_source: 100000
  max_sessions_per_user: 100000
  penalties:
    enabled: false
  shutdown_grace: 2s
%s
ops:
  listen: %s
audit:
  output: ""
log:
  format: json
  level: info
`, port, filepath.Join(etc, "ssh_host_ed25519_key"), t.sftpServer, strings.TrimRight(directory, "\n"), strings.TrimRight(opt.extraConfig, "\n"), w.opsAddr)
	cfgPath := filepath.Join(etc, "bastion.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return fail(err)
	}
	w.srv = &server{name: "bastion", port: port, flag: "-port", logPath: filepath.Join(dir, "bastion.log"),
		args: []string{w.bin, "serve", "--config", cfgPath}}
	if err := w.srv.start(ctx); err != nil {
		return fail(err)
	}

	// OpenSSH's clients, for the scp/sftp sample.
	w.sshConfig = filepath.Join(dir, "ssh_config")
	hosts := fmt.Sprintf("Host bastion\n  HostName 127.0.0.1\n  Port %d\n", port)
	if err := writeSSHConfig(w.sshConfig, hosts, w.user, w.keyPath, 30); err != nil {
		return fail(err)
	}

	// The loopback echo server the ssh -L streams go to.
	if w.echo, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return fail(err)
	}
	w.echoWG.Add(1)
	go w.serveEcho()
	return w, nil
}

func (w *soakWorld) serveEcho() {
	defer w.echoWG.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := w.echo.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

func (w *soakWorld) close(keep bool) {
	if w.echo != nil {
		w.echo.Close()
		w.echoWG.Wait()
	}
	if w.srv != nil {
		w.srv.stop()
	}
	if keep {
		fmt.Fprintf(os.Stderr, "kept %s\n", w.dir)
	} else {
		os.RemoveAll(w.dir)
	}
}

func (w *soakWorld) clientConfig(user string) *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(w.signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Timeout:         30 * time.Second,
	}
}

// goroutines reads go_goroutines from bastion's /metrics.
func (w *soakWorld) goroutines(ctx context.Context) (int, error) {
	m, err := w.metrics(ctx)
	if err != nil {
		return 0, err
	}
	g, ok := m["go_goroutines"]
	if !ok {
		return 0, errors.New("no go_goroutines in /metrics")
	}
	return int(g), nil
}

// metrics reads bastion's /metrics: the samples without labels, and the
// sum over the labels of each labelled one under its bare name.
func (w *soakWorld) metrics(ctx context.Context) (map[string]float64, error) {
	s, err := w.samples(ctx)
	return sums(s), err
}

// sums is metrics' map of samples.
func sums(samples []metricSample) map[string]float64 {
	m := map[string]float64{}
	for _, s := range samples {
		m[s.name] += s.value
	}
	return m
}

// metricSample is one sample of bastion's /metrics page.
type metricSample struct {
	name   string
	labels string // between the braces: k="v",k="v"; "" for none
	value  float64
}

// label is the value of the sample's label name, "" if it has none.
func (s metricSample) label(name string) string {
	for _, kv := range strings.Split(s.labels, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// samples reads bastion's /metrics page.
func (w *soakWorld) samples(ctx context.Context) ([]metricSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.opsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	// A new connection each time: a kept-alive one would be a goroutine
	// of bastion's that the soak itself holds.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	return parseSamples(string(body)), nil
}

// parseSamples reads a /metrics page in Prometheus's text format.
func parseSamples(page string) []metricSample {
	var samples []metricSample
	for _, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		s := metricSample{}
		name, v, ok := strings.Cut(line, " ")
		if i := strings.Index(line, "{"); i >= 0 {
			j := strings.LastIndex(line, "}")
			if j < i {
				continue
			}
			name, s.labels, v, ok = line[:i], line[i+1:j], line[j+1:], true
		}
		if !ok {
			continue
		}
		var err error
		if s.value, err = strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			s.name = name
			samples = append(samples, s)
		}
	}
	return samples
}

// machine describes where the soak ran.
func machine() string {
	cpu := "?"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
		if len(f) >= 2 {
			kb, _ := strconv.ParseFloat(f[1], 64)
			mem = fmt.Sprintf(", %.0f GiB RAM", kb/1024/1024)
		}
	}
	kernel := ""
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(data))
	}
	return fmt.Sprintf("%d CPUs (%s)%s%s, %s", runtime.NumCPU(), cpu, mem, kernel, runtime.Version())
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// replaceBlock replaces what lies between the markers of block name
// (default "soak") of path with md (appending the block when the markers
// are missing).
func replaceBlock(path, name, md string) error {
	if name == "" {
		name = "soak"
	}
	begin, end := "<!-- "+name+":begin (written by go run ./bench soak -out) -->", "<!-- "+name+":end -->"
	if name != "soak" {
		begin = "<!-- " + name + ":begin (written by the run's -out) -->"
	}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s := string(data)
	block := begin + "\n" + md + "\n" + end
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i >= 0 && j > i {
		s = s[:i] + block + s[j+len(end):]
	} else {
		s += "\n" + block + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

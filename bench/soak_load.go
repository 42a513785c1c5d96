package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// The kinds of traffic, each with its own byte accounting.
const (
	kindPTY     = "pty (cat)"
	kindExec    = "exec (cat)"
	kindForward = "ssh -L (echo)"
	kindSCP     = "scp (OpenSSH)"
	kindSCPO    = "scp -O (OpenSSH)"
	kindSFTP    = "sftp (OpenSSH)"
)

var soakKinds = []string{kindPTY, kindExec, kindForward, kindSCP, kindSCPO, kindSFTP}

// hangTimeout: a round trip that has not come back by then is a hang; the
// session is cut and its bytes in flight count as lost.
const hangTimeout = 60 * time.Second

// traffic counts one kind's bytes: sent, returned intact, returned
// different. Sent minus both is lost.
type traffic struct {
	sent, ok, corrupt atomic.Int64
	sessions, failed  atomic.Int64 // sessions (or transfers) run, and failed
	cut, cutBytes     atomic.Int64 // sessions ended by a fault on purpose, and their chunks in flight
}

// soakRun is the state of one run.
type soakRun struct {
	opt     soakOptions
	w       *soakWorld
	traffic map[string]*traffic
	logf    func(string, ...any)

	open     atomic.Int64 // sessions open now
	running  atomic.Int64 // sessions whose command has run, ever (soakOptions.allRunning)
	loginOK  atomic.Int64
	loginBad atomic.Int64
	loginRef atomic.Int64 // logins refused as a fault expects (soakOptions.expectedLogin)
	skipped  atomic.Int64 // logins not started: the client was saturated

	mu        sync.Mutex
	latencies []time.Duration // logins of the current interval
	errs      []string        // first errors, bounded
	nErrs     int
	told      map[string]int // what users read when a fault ended their session or refused their login
}

// tell records what a user read (one line, bounded).
func (r *soakRun) tell(what, msg string) {
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.told == nil {
		r.told = map[string]int{}
	}
	if len(r.told) < 50 {
		r.told[what+": "+msg]++
	}
}

// account is the account of the i-th session or login.
func (r *soakRun) account(i int) string {
	if len(r.opt.accounts) == 0 {
		return r.w.user
	}
	return r.opt.accounts[i%len(r.opt.accounts)]
}

// clientConfig is the client config of the i-th session or login: the
// accounts in turn.
func (r *soakRun) clientConfig(i int) *ssh.ClientConfig {
	if len(r.opt.accounts) == 0 {
		return r.w.clientConfig(r.w.user)
	}
	return r.w.clientConfig(r.opt.accounts[i%len(r.opt.accounts)])
}

// shellWait is how long a pty session waits for its shell: with the kube
// backend, its pod may be starting (kube.start_timeout in the kube soak is
// 120 s).
func (r *soakRun) shellWait() time.Duration {
	if r.opt.backend == "kube" {
		return 150 * time.Second
	}
	return 30 * time.Second
}

// forwardTo is where the ssh -L streams go.
func (r *soakRun) forwardTo() string {
	if r.opt.forwardTo != "" {
		return r.opt.forwardTo
	}
	return r.w.echo.Addr().String()
}

func (r *soakRun) fail(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nErrs++
	if len(r.errs) < 20 {
		r.errs = append(r.errs, fmt.Sprintf(format, args...))
	}
}

// soak runs the load and returns the report.
func soak(ctx context.Context, opt soakOptions, out io.Writer) (*soakReport, error) {
	logf := func(format string, args ...any) {
		fmt.Fprintf(out, "%s  %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	becomeSubreaper()
	defer sweep()
	w, err := startSoakWorld(ctx, opt, logf)
	if err != nil {
		return nil, err
	}
	defer w.close(opt.keep)
	r := &soakRun{opt: opt, w: w, traffic: map[string]*traffic{}, logf: logf}
	for _, k := range soakKinds {
		r.traffic[k] = &traffic{}
	}
	rep := &soakReport{opt: opt, machine: machine(), bastion: w.bastionRev, openssh: opensshVersion(w.tools.ssh),
		started: time.Now().UTC()}
	time.Sleep(500 * time.Millisecond) // let bastion settle before the baseline
	if rep.baseGoroutines, err = w.goroutines(ctx); err != nil {
		return nil, fmt.Errorf("read bastion's goroutines: %w", err)
	}
	rep.baseRSS = rssKiB(w.srv.pid())
	logf("bastion %s on %s: %d goroutines, %d MiB RSS before the load", w.bastionRev, w.srv.addr(), rep.baseGoroutines, rep.baseRSS/1024)
	logf("soak: %d sessions, %s, %.0f logins/s, %d OpenSSH copy workers, %d B/s per session each way",
		opt.sessions, opt.duration, opt.loginRate, opt.openssh, opt.rate)

	loadCtx, stopLoad := context.WithTimeout(ctx, opt.duration)
	defer stopLoad()
	var wg sync.WaitGroup
	// Sessions, opened at the ramp rate.
	wg.Go(func() {
		tick := time.NewTicker(time.Duration(float64(time.Second) / opt.ramp))
		defer tick.Stop()
		for i := range opt.sessions {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			kind := kindPTY
			mix := i
			if n := len(opt.accounts); n > 0 {
				// Session j of account a: a's sessions are of different
				// kinds (i % 10 alone would give each account one kind).
				mix = i%n + 4*(i/n)
			}
			switch mix % 10 {
			case 4, 5, 6:
				kind = kindExec
			case 7, 8, 9:
				kind = kindForward
			}
			wg.Go(func() { r.session(loadCtx, i, kind) })
		}
	})
	for i := range opt.openssh {
		wg.Go(func() { r.openSSHCopies(loadCtx, i) })
	}
	if opt.loginRate > 0 {
		wg.Go(func() { r.logins(loadCtx) })
	}
	for _, f := range opt.faults {
		wg.Go(func() {
			select {
			case <-loadCtx.Done():
			case <-time.After(f.at):
				logf("fault: %s", f.name)
				if f.act != nil {
					if err := f.act(ctx, w); err != nil {
						r.fail("fault %s: %v", f.name, err)
					}
				} else {
					f.do()
				}
				r.mu.Lock()
				rep.faults = append(rep.faults, fmt.Sprintf("%s: %s", time.Since(rep.started).Round(time.Second), f.name))
				r.mu.Unlock()
			}
		})
	}

	// One row per interval until the load ends.
	sampler := newSampler(r, rep)
	tick := time.NewTicker(opt.interval)
	func() {
		defer tick.Stop()
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
				sampler.row(ctx)
			}
		}
	}()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	sampler.row(ctx) // the last, partial interval
	logf("load over; draining (every session checks its last bytes and closes)")
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(hangTimeout + 30*time.Second):
		r.fail("sessions still running %s after the load ended", hangTimeout+30*time.Second)
		w.srv.stop() // frees every client stuck on it
		<-drained
	}
	rep.cpu, rep.childCPU = ownCPU(w.srv.pid())
	rep.clientCPU = selfCPUSeconds()
	rep.wall = time.Since(rep.started)

	// Leaks: once every client has gone, bastion's goroutines come back
	// to the baseline and no session process is left.
	deadline := time.Now().Add(30 * time.Second)
	for {
		g, err := w.goroutines(ctx)
		if err == nil {
			rep.endGoroutines = g
		}
		rep.endRSS = rssKiB(w.srv.pid())
		rep.leftProcs = len(descendants(w.srv.pid()))
		if (err == nil && g <= rep.baseGoroutines+goroutineSlack && rep.leftProcs == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, k := range soakKinds {
		t := r.traffic[k]
		rep.kinds = append(rep.kinds, kindTotals{kind: k, sessions: t.sessions.Load(), failed: t.failed.Load(),
			cut: t.cut.Load(), cutBytes: t.cutBytes.Load(),
			sent: t.sent.Load(), ok: t.ok.Load(), corrupt: t.corrupt.Load()})
	}
	rep.loginOK, rep.loginBad, rep.loginSkipped, rep.loginRefused = r.loginOK.Load(), r.loginBad.Load(), r.skipped.Load(), r.loginRef.Load()
	r.mu.Lock()
	rep.told = r.told
	rep.errs, rep.nErrs = r.errs, r.nErrs
	r.mu.Unlock()
	rep.load = loadAvg()
	if opt.finalCheck != nil {
		rep.finalNotes, rep.finalProblems = opt.finalCheck(ctx, w.metrics)
	}
	return rep, nil
}

// goroutineSlack is how many goroutines over the baseline still count as
// "back to the baseline" (timers, the ops server's own connection).
const goroutineSlack = 10

// session holds one session for the whole load: it opens its own
// connection, then echoes paced random chunks and checks each one.
func (r *soakRun) session(ctx context.Context, i int, kind string) {
	t := r.traffic[kind]
	t.sessions.Add(1)
	var client *ssh.Client
	var err error
	for attempt := 0; ; attempt++ { // the ramp may meet a busy server: retry a few times
		client, err = ssh.Dial("tcp", r.w.srv.addr(), r.clientConfig(i))
		if err == nil || attempt == 4 || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 500 * time.Millisecond)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.broke(t, i, "%s session %d: connect: %v", kind, i, err)
		}
		return
	}
	defer client.Close()
	r.open.Add(1)
	defer r.open.Add(-1)
	rng := mrand.New(mrand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))

	var rw io.ReadWriter
	var finish func() error
	var sess *ssh.Session
	var stderr syncBuffer
	chunk := 16 << 10
	switch kind {
	case kindPTY, kindExec:
		s, err := client.NewSession()
		if err != nil {
			r.broke(t, i, "%s session %d: open: %v", kind, i, err)
			return
		}
		defer s.Close()
		sess = s
		s.Stderr = &stderr
		stdin, _ := s.StdinPipe()
		stdout, _ := s.StdoutPipe()
		if kind == kindPTY {
			chunk = 1 << 10 // a terminal's input queue is 4 KiB
			if err := s.RequestPty("xterm", 40, 120, ssh.TerminalModes{}); err != nil {
				r.broke(t, i, "%s session %d: pty: %v", kind, i, err)
				return
			}
			if err := s.Shell(); err != nil {
				r.broke(t, i, "%s session %d: shell: %v", kind, i, err)
				return
			}
			// Typed into the interactive shell; the marker is split so
			// that the echo of the command line does not contain it.
			if _, err = io.WriteString(stdin, "stty raw -echo; printf 'SOAK''-READY'; exec cat\n"); err == nil {
				err = waitFor(stdout, "SOAK-READY", r.shellWait())
			}
			if err != nil {
				r.broke(t, i, "%s session %d: start cat in the shell: %v", kind, i, err)
				return
			}
		} else if r.opt.backend == "kube" {
			// bastion accepts the exec before the account's pod is
			// ready: wait for the command to run (up to the pod's
			// start) before the round trips and their hang timeout.
			err := s.Start("printf 'SOAK''-READY'; exec cat")
			if err == nil {
				err = waitFor(stdout, "SOAK-READY", r.shellWait())
			}
			if err != nil {
				r.broke(t, i, "%s session %d: exec cat: %v", kind, i, err)
				return
			}
		} else if err := s.Start("cat"); err != nil {
			r.broke(t, i, "%s session %d: exec cat: %v", kind, i, err)
			return
		}
		rw = struct {
			io.Reader
			io.Writer
		}{stdout, stdin}
		finish = func() error {
			if kind == kindPTY {
				// cat in raw mode: end it as a user would (^D needs
				// canonical mode), by closing the session.
				_ = stdin.Close()
				return nil
			}
			_ = stdin.Close()
			return s.Wait()
		}
	case kindForward:
		c, err := client.Dial("tcp", r.forwardTo())
		if err != nil {
			r.broke(t, i, "%s session %d: open the forward: %v", kind, i, err)
			return
		}
		defer c.Close()
		rw = c
		finish = func() error { return c.Close() }
	}

	if r.running.Add(1) == int64(r.opt.sessions) && r.opt.allRunning != nil {
		m, _ := r.w.metrics(ctx)
		r.opt.allRunning(m)
	}

	// Paced: on average opt.rate bytes per second each way.
	buf, back := make([]byte, chunk), make([]byte, chunk)
	for ctx.Err() == nil {
		n := 1 + rng.IntN(chunk)
		pause := time.Duration(float64(n) / float64(r.opt.rate) * float64(time.Second))
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		if ctx.Err() != nil {
			break
		}
		fill(rng, buf[:n], kind == kindPTY)
		t.sent.Add(int64(n))
		// A round trip that does not come back cuts the connection.
		watchdog := time.AfterFunc(hangTimeout, func() { client.Close() })
		_, werr := rw.Write(buf[:n])
		got, rerr := io.ReadFull(rw, back[:n])
		hung := !watchdog.Stop()
		ok := werr == nil && rerr == nil && bytes.Equal(buf[:n], back[:n])
		if !ok && !hung && r.opt.expectCut != nil && r.opt.expectCut(r.account(i)) {
			// A fault ends this account's sessions on purpose: what did
			// its user read? (stderr for exec, the terminal for a pty)
			if sess != nil {
				done := make(chan struct{})
				go func() { _ = sess.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(5 * time.Second):
				}
			}
			msg := stderr.String()
			if kind == kindPTY {
				msg += string(tailBytes(back[:got], 300)) // the terminal
			}
			if kind == kindForward {
				msg = fmt.Sprintf("write %v, read %v", werr, rerr)
			}
			t.cut.Add(1)
			t.cutBytes.Add(int64(n))
			r.tell(kind+" session ended by the fault", msg)
			return
		}
		switch {
		case ok:
			t.ok.Add(int64(n))
			continue
		case werr == nil && rerr == nil:
			t.corrupt.Add(int64(n))
			t.failed.Add(1)
			r.fail("%s session %d: %d bytes came back different (sha256 %x, want %x)", kind, i, n, sha256.Sum256(back[:n]), sha256.Sum256(buf[:n]))
		default:
			t.failed.Add(1)
			r.fail("%s session %d: round trip of %d bytes (hung %v): write %v, read %v", kind, i, n, hung, werr, rerr)
		}
		return
	}
	if err := finish(); err != nil {
		t.failed.Add(1)
		r.fail("%s session %d: end: %v", kind, i, err)
	}
}

// syncBuffer is a bounded buffer safe for one writer and other readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 4096 - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// broke records a session that failed before it moved its data: a
// failure, unless a fault ends its account's sessions on purpose.
func (r *soakRun) broke(t *traffic, i int, format string, args ...any) {
	if r.opt.expectCut != nil && r.opt.expectCut(r.account(i)) {
		t.cut.Add(1)
		r.tell("session ended by the fault before it started", fmt.Sprintf(format, args...))
		return
	}
	t.failed.Add(1)
	r.fail(format, args...)
}

// fill puts random bytes in b (printable ones for a terminal).
func fill(rng *mrand.Rand, b []byte, printable bool) {
	for i := range b {
		if printable {
			b[i] = byte(' ' + rng.IntN(95))
		} else {
			b[i] = byte(rng.Uint32())
		}
	}
}

// waitFor reads r until it has seen marker, within d.
func waitFor(r io.Reader, marker string, d time.Duration) error {
	found := make(chan error, 1)
	go func() {
		var seen []byte
		buf := make([]byte, 256)
		for {
			n, err := r.Read(buf)
			seen = append(seen, buf[:n]...)
			if bytes.Contains(seen, []byte(marker)) {
				// Nothing is typed before the marker: it ends the output.
				found <- nil
				return
			}
			if err != nil {
				found <- fmt.Errorf("%w (output so far: %q)", err, tailBytes(seen, 200))
				return
			}
		}
	}()
	select {
	case err := <-found:
		return err
	case <-time.After(d):
		return fmt.Errorf("no %q within %s", marker, d)
	}
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// logins makes opt.loginRate new authenticated connections per second and
// records how long each took.
func (r *soakRun) logins(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, 256)
	// Paced against the clock, not a ticker (which drops ticks when this
	// process is not scheduled in time): logins that fell due while it
	// waited start at once.
	start, started := time.Now(), 0
	every := time.Duration(float64(time.Second) / r.opt.loginRate)
	for {
		due := int(time.Since(start) / every)
		if started >= due {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(start.Add(time.Duration(started+1) * every))):
			}
			continue
		}
		started++
		n := started
		select {
		case sem <- struct{}{}:
		default:
			r.skipped.Add(1)
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			start := time.Now()
			cfg := r.clientConfig(n)
			c, err := ssh.Dial("tcp", r.w.srv.addr(), cfg)
			if err == nil && r.opt.loginCommand != "" {
				err = runLoginCommand(c, r.opt.loginCommand)
				c.Close()
			}
			took := time.Since(start)
			if err != nil {
				switch {
				case ctx.Err() != nil:
				case r.opt.expectedLogin != nil && r.opt.expectedLogin(err):
					r.loginRef.Add(1)
					r.tell("login refused during the fault", err.Error())
				default:
					r.loginBad.Add(1)
					r.fail("login as %s: %v", cfg.User, err)
				}
				return
			}
			c.Close()
			r.loginOK.Add(1)
			r.mu.Lock()
			r.latencies = append(r.latencies, took)
			r.mu.Unlock()
		})
	}
}

// runLoginCommand runs command in a new session of c and wants it to
// succeed and print something.
func runLoginCommand(c *ssh.Client, command string) error {
	s, err := c.NewSession()
	if err != nil {
		return fmt.Errorf("open a session: %w", err)
	}
	defer s.Close()
	var stderr bytes.Buffer
	s.Stderr = &stderr
	out, err := s.Output(command)
	if err != nil {
		return fmt.Errorf("%s: %w (stderr %q)", command, err, tailBytes(stderr.Bytes(), 300))
	}
	if len(out) == 0 {
		return fmt.Errorf("%s printed nothing", command)
	}
	return nil
}

// openSSHCopies copies random files to bastion and back with OpenSSH's
// scp, scp -O and sftp in turn, and compares their SHA-256.
func (r *soakRun) openSSHCopies(ctx context.Context, worker int) {
	size := 1 << 20
	if r.opt.quick {
		size = 256 << 10
	}
	local := filepath.Join(r.w.dir, "copies", fmt.Sprintf("copy-%d", worker))
	if err := os.MkdirAll(filepath.Dir(local), 0o700); err != nil {
		r.fail("%s: %v", kindSCP, err)
		return
	}
	rng := mrand.New(mrand.NewPCG(uint64(worker), uint64(time.Now().UnixNano())))
	data := make([]byte, size)
	for round := 0; ctx.Err() == nil; round++ {
		kind := []string{kindSCP, kindSCPO, kindSFTP}[round%3]
		t := r.traffic[kind]
		fill(rng, data, false)
		if err := os.WriteFile(local, data, 0o600); err != nil {
			r.fail("%s: %v", kind, err)
			return
		}
		remote := filepath.Join(r.w.dir, "home", fmt.Sprintf("copy-%d-%d", worker, round))
		back := local + ".back"
		t.sessions.Add(1)
		t.sent.Add(int64(size))
		var err error
		switch kind {
		case kindSFTP:
			batch := fmt.Sprintf("put %s %s\nget %s %s\nrm %s\n", local, remote, remote, back, remote)
			err = r.runClient(r.w.tools.sftp, batch, "-F", r.w.sshConfig, "-b", "-", "bastion")
		default:
			args := []string{"-F", r.w.sshConfig, "-q"}
			if kind == kindSCPO {
				args = append(args, "-O")
			}
			err = r.runClient(r.w.tools.scp, "", append(args, local, "bastion:"+remote)...)
			if err == nil {
				err = r.runClient(r.w.tools.scp, "", append(args, "bastion:"+remote, back)...)
			}
			os.Remove(remote)
		}
		if err != nil {
			t.failed.Add(1)
			r.fail("%s worker %d: %v", kind, worker, err)
			continue
		}
		got, err := os.ReadFile(back)
		switch {
		case err != nil:
			t.failed.Add(1)
			r.fail("%s worker %d: %v", kind, worker, err)
		case sha256.Sum256(got) != sha256.Sum256(data):
			t.corrupt.Add(int64(size))
			t.failed.Add(1)
			r.fail("%s worker %d: the copy that came back differs (%d bytes, want %d)", kind, worker, len(got), size)
		default:
			t.ok.Add(int64(size))
		}
		os.Remove(back)
	}
}

// runClient runs an OpenSSH client to its end (not cut by the load's end:
// a copy started is a copy checked).
func (r *soakRun) runClient(prog, stdin string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(context.Background()), hangTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	if stdin != "" {
		cmd.Stdin = bytes.NewBufferString(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", filepath.Base(prog), err, tailBytes(out, 300))
	}
	return nil
}

// sampler makes the report's rows.
type sampler struct {
	r       *soakRun
	rep     *soakReport
	last    time.Time
	lastCPU float64
	lastOK  int64
	lastBad int64
}

func newSampler(r *soakRun, rep *soakReport) *sampler {
	own, _ := ownCPU(r.w.srv.pid())
	return &sampler{r: r, rep: rep, last: time.Now(), lastCPU: own}
}

func (s *sampler) row(ctx context.Context) {
	now := time.Now()
	el := now.Sub(s.last).Seconds()
	if el < 2 {
		return // the last tick was just now
	}
	r := s.r
	r.mu.Lock()
	lat := r.latencies
	r.latencies = nil
	r.mu.Unlock()
	slices.Sort(lat)
	var ok int64
	for _, t := range r.traffic {
		ok += t.ok.Load()
	}
	cpu, _ := ownCPU(r.w.srv.pid())
	m, _ := r.w.metrics(ctx)
	row := soakRow{
		at:         now.Sub(s.rep.started),
		open:       r.open.Load(),
		logins:     int64(len(lat)),
		loginFails: r.loginBad.Load() - s.lastBad,
		p50:        percentile(lat, 0.50),
		p99:        percentile(lat, 0.99),
		rssKiB:     rssKiB(r.w.srv.pid()),
		goroutines: int(m["go_goroutines"]),
		heapMiB:    m["go_memstats_heap_inuse_bytes"] / (1 << 20),
		loginRate:  float64(len(lat)) / el,
		cores:      (cpu - s.lastCPU) / el,
		mbps:       float64(ok-s.lastOK) / el / 1e6,
		load:       loadAvg(),
	}
	if r.opt.observe != nil {
		row.note = r.opt.observe(ctx, m)
	}
	if len(lat) > 0 {
		row.max = lat[len(lat)-1]
	}
	s.last, s.lastCPU, s.lastOK, s.lastBad = now, cpu, ok, r.loginBad.Load()
	s.rep.rows = append(s.rep.rows, row)
	r.logf("%6s  %4d open  %.1f logins/s (p50 %s, p99 %s, max %s, %d failed)  RSS %d MiB (heap %.0f MiB)  %d goroutines  %.2f cores  %.2f MB/s checked  load %s  %s",
		row.at.Round(time.Second), row.open, row.loginRate, ms(row.p50), ms(row.p99), ms(row.max), row.loginFails,
		row.rssKiB/1024, row.heapMiB, row.goroutines, row.cores, row.mbps, row.load, row.note)
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func rssKiB(pid int) int64 {
	m, _ := readMem(pid)
	return m.RSS
}

// ownCPU is the CPU seconds of pid itself and of its children that have
// exited and been waited for.
func ownCPU(pid int) (own, children float64) {
	st, ok := readStat(pid)
	if !ok {
		return 0, 0
	}
	return float64(st.cpuTicks) / clockTicks, float64(st.childCPU) / clockTicks
}

func selfCPUSeconds() float64 {
	st, ok := readStat(os.Getpid())
	if !ok {
		return 0
	}
	return float64(st.cpuTicks) / clockTicks
}

func opensshVersion(ssh string) string {
	out, err := exec.Command(ssh, "-V").CombinedOutput()
	if err != nil {
		return "?"
	}
	return string(bytes.TrimSpace(out))
}

var errNoSessions = errors.New("no session could be opened")

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// clientConfig is the Go client of the handshake and idle cases. The
// algorithms are pinned to what both servers support and what OpenSSH's
// own client negotiates with both (curve25519, ed25519 host key,
// AES-GCM), so that neither server pays for a costlier choice: left to
// its defaults, x/crypto would pick ML-KEM with bastion and curve25519
// with OpenSSH 9.2.
func (b *bench) clientConfig() *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:              b.me.name,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(b.signer)},
		HostKeyCallback:   ssh.InsecureIgnoreHostKey(),
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Config: ssh.Config{
			KeyExchanges: []string{ssh.KeyExchangeCurve25519},
			Ciphers:      []string{ssh.CipherAES128GCM},
		},
		Timeout: 10 * time.Second,
	}
}

// --- handshake rate --------------------------------------------------------

const handshakeWorkers = 32

type handshakeRun struct {
	OK, Failed  int64
	Seconds     float64
	Rate        float64 // logins per second
	ServerCPU   float64 // CPU seconds the server used
	CPUPerLogin float64 // ms
	Cores       float64 // server CPU / wall time
	// ClientCPUPerLogin is the load generator's CPU per login (this
	// process, ms): it shares the cores with the server, so the rate
	// cannot pass cores / (server + client CPU per login).
	ClientCPUPerLogin float64
	FirstError        string `json:",omitempty"`
}

func (b *bench) caseHandshake(ctx context.Context) error {
	dur, warm := 10*time.Second, 2*time.Second
	if b.opt.quick {
		dur, warm = 3*time.Second, time.Second
	}
	reps := b.reps(3)
	need := time.Duration(2*reps)*(dur+2*time.Second) + 2*(warm+2*time.Second)
	if !b.left(need) {
		return errBudget
	}
	b.logf("handshake rate: %d Go workers, %s per run, alternating", handshakeWorkers, dur)
	runs := map[string][]handshakeRun{}
	a, bb, err := b.alternate(ctx, true, reps, func(ctx context.Context, s *server, isWarm bool) (float64, error) {
		d := dur
		if isWarm {
			d = warm
		}
		r, err := b.handshakes(ctx, s, d)
		if err != nil {
			return 0, err
		}
		if !isWarm {
			runs[s.name] = append(runs[s.name], r)
		}
		if b.opt.verbose {
			b.logf("    %s: %d ok, %d failed, %.0f/s, %.2f ms CPU per login, %.2f cores", s.name, r.OK, r.Failed, r.Rate, r.CPUPerLogin, r.Cores)
		}
		return r.Rate, nil
	})
	if err != nil {
		return err
	}
	b.add(&result{ID: "handshake-rate", Group: "handshake", Title: fmt.Sprintf("Handshake rate, %d Go workers", handshakeWorkers),
		Unit: "logins/s", Better: "higher", Target: &target{On: "ratio", Op: ">=", Bound: 20, Text: "≥ 20×"},
		A: a, B: bb, Extra: map[string]any{"runs": runs}})
	var ca, cb, la, lb []float64
	for _, r := range runs["OpenSSH"] {
		ca = append(ca, r.CPUPerLogin)
		la = append(la, r.ClientCPUPerLogin)
	}
	for _, r := range runs["bastion"] {
		cb = append(cb, r.CPUPerLogin)
		lb = append(lb, r.ClientCPUPerLogin)
	}
	b.add(&result{ID: "handshake-cpu", Group: "handshake", Title: "Server CPU per login (during the rate run)",
		Unit: "ms", Better: "lower", A: ca, B: cb})
	// The rate ratio cannot pass (sshd + client) / (bastion + client)
	// CPU per login while the load generator shares the cores.
	b.add(&result{ID: "handshake-client-cpu", Group: "handshake", Title: "Load generator CPU per login (same cores; bounds the rate)",
		Unit: "ms", Better: "lower", A: la, B: lb})
	// The load generator shares the cores; what the server could do with
	// all of them is cores / CPU per login.
	capA, capB := make([]float64, len(ca)), make([]float64, len(cb))
	for i, v := range ca {
		capA[i] = float64(runtime.NumCPU()) * 1000 / v
	}
	for i, v := range cb {
		capB[i] = float64(runtime.NumCPU()) * 1000 / v
	}
	b.add(&result{ID: "handshake-capacity", Group: "handshake", Title: fmt.Sprintf("Login capacity of %d cores (cores / CPU per login)", runtime.NumCPU()),
		Unit: "logins/s", Better: "higher", Target: &target{On: "value", Op: ">=", Bound: 1000, Text: "≥ 1000/s"}, A: capA, B: capB})
	return nil
}

// handshakes opens authenticated connections from handshakeWorkers
// goroutines for d and closes each at once.
func (b *bench) handshakes(ctx context.Context, s *server, d time.Duration) (handshakeRun, error) {
	cfg := b.clientConfig()
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	cpu0, self0 := s.cpuSeconds(), selfCPUSeconds()
	t0 := time.Now()
	stop := t0.Add(d)
	var wg sync.WaitGroup
	for i := 0; i < handshakeWorkers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && ctx.Err() == nil {
				if err := login(s.addr(), cfg); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(10 * time.Millisecond)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0).Seconds()
	self := selfCPUSeconds() - self0
	if err := ctx.Err(); err != nil {
		return handshakeRun{}, err
	}
	s.settle(5 * time.Second)
	cpu := s.cpuSeconds() - cpu0
	r := handshakeRun{OK: ok.Load(), Failed: failed.Load(), Seconds: wall, ServerCPU: cpu}
	r.Rate = float64(r.OK) / wall
	if r.OK > 0 {
		r.CPUPerLogin = cpu * 1000 / float64(r.OK)
		r.ClientCPUPerLogin = self * 1000 / float64(r.OK)
	}
	r.Cores = cpu / wall
	if e, _ := firstErr.Load().(string); e != "" {
		r.FirstError = e
	}
	if r.OK == 0 {
		return r, fmt.Errorf("no login succeeded: %s", r.FirstError)
	}
	return r, nil
}

func login(addr string, cfg *ssh.ClientConfig) error {
	nc, err := net.DialTimeout("tcp", addr, cfg.Timeout)
	if err != nil {
		return err
	}
	if cfg.Timeout > 0 {
		_ = nc.SetDeadline(time.Now().Add(cfg.Timeout))
	}
	c, _, _, err := ssh.NewClientConn(nc, addr, cfg)
	if err != nil {
		nc.Close()
		return err
	}
	return c.Close()
}

// --- memory per idle session ------------------------------------------------

// idleSession is one authenticated connection with a shell on a pty.
type idleSession struct {
	client *ssh.Client
	sess   *ssh.Session
	stdin  *io.PipeWriter
}

func (i *idleSession) close() {
	i.stdin.Close()
	i.sess.Close()
	i.client.Close()
}

// firstByte signals once the shell has printed something (its prompt).
type firstByte struct {
	once sync.Once
	ch   chan struct{}
}

func (f *firstByte) Write(p []byte) (int, error) {
	f.once.Do(func() { close(f.ch) })
	return len(p), nil
}

func openIdle(addr string, cfg *ssh.ClientConfig) (*idleSession, error) {
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	s, err := c.NewSession()
	if err != nil {
		c.Close()
		return nil, err
	}
	fb := &firstByte{ch: make(chan struct{})}
	s.Stdout, s.Stderr = fb, fb
	// An interactive client keeps its input open; without a Stdin the
	// x/crypto client would send EOF at once.
	stdinR, stdinW := io.Pipe()
	s.Stdin = stdinR
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{ssh.ECHO: 1}); err != nil {
		c.Close()
		return nil, fmt.Errorf("pty-req: %w", err)
	}
	if err := s.Shell(); err != nil {
		c.Close()
		return nil, fmt.Errorf("shell: %w", err)
	}
	select {
	case <-fb.ch:
	case <-time.After(20 * time.Second):
		c.Close()
		return nil, errors.New("the shell printed no prompt within 20s")
	}
	return &idleSession{client: c, sess: s, stdin: stdinW}, nil
}

type idlePoint struct {
	Sessions  int
	Mem       serverMem
	PerSessKB float64 // growth per session over the baseline, KiB
}

func (b *bench) caseIdle(ctx context.Context) error {
	steps := []int{500, 2000}
	if b.opt.quick {
		steps = []int{50, 200}
	}
	need := 150 * time.Second
	if b.opt.quick {
		need = 30 * time.Second
	}
	if !b.left(need) {
		return errBudget
	}
	b.logf("memory per idle session: %v shells on a pty, one connection each", steps)
	points := map[string][]idlePoint{}
	for _, s := range b.servers {
		// A fresh process: earlier cases' heap would blur the growth.
		if err := s.restart(ctx); err != nil {
			return err
		}
		pts, err := b.idleOn(ctx, s, steps)
		s.restart(ctx) // give the memory back before the next case
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		points[s.name] = pts
	}
	for i, n := range steps[:] {
		a, bb := points["OpenSSH"][i+1], points["bastion"][i+1]
		b.add(&result{ID: fmt.Sprintf("idle-%d", n), Group: "idle", Title: fmt.Sprintf("Memory per idle session, %d sessions", n),
			Unit: "KiB", Better: "lower", Target: &target{On: "value", Op: "<", Bound: 48, Text: "< 48 KiB"},
			A: []float64{a.PerSessKB}, B: []float64{bb.PerSessKB},
			Extra: map[string]any{"openssh": a, "bastion": bb, "openssh_baseline": points["OpenSSH"][0], "bastion_baseline": points["bastion"][0],
				"measure": "OpenSSH: PSS of the listener and every sshd process below it; bastion: RSS of its process; users' shells excluded"}})
	}
	return nil
}

// idleOn opens sessions up to each step, waits for the server to settle
// and records its memory.
func (b *bench) idleOn(ctx context.Context, s *server, steps []int) ([]idlePoint, error) {
	cfg := b.clientConfig()
	settle := func() {
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
	}
	// sshd: count PSS (shared pages split between its processes);
	// bastion: one process, RSS.
	value := func(m serverMem) int64 {
		if s.name == "OpenSSH" {
			return m.PSSKiB
		}
		return m.RSSKiB
	}
	settle()
	base := s.memory()
	pts := []idlePoint{{Sessions: 0, Mem: base}}
	var sessions []*idleSession
	var mu sync.Mutex
	defer func() {
		var wg sync.WaitGroup
		for _, is := range sessions {
			wg.Add(1)
			go func() { defer wg.Done(); is.close() }()
		}
		wg.Wait()
	}()
	t0 := time.Now()
	for _, n := range steps {
		var firstErr error
		failed := func() bool {
			mu.Lock()
			defer mu.Unlock()
			return firstErr != nil
		}
		jobs := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range jobs {
					is, err := openIdle(s.addr(), cfg)
					mu.Lock()
					if err != nil {
						if firstErr == nil {
							firstErr = err
						}
					} else {
						sessions = append(sessions, is)
					}
					mu.Unlock()
				}
			}()
		}
		for i := len(sessions); i < n; i++ {
			if failed() || ctx.Err() != nil || time.Until(b.deadline) < 10*time.Second {
				break
			}
			jobs <- struct{}{}
		}
		close(jobs)
		wg.Wait()
		if firstErr != nil {
			return nil, fmt.Errorf("opening idle session %d: %w", len(sessions)+1, firstErr)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(sessions) < n {
			return nil, errBudget
		}
		settle()
		m := s.memory()
		per := float64(value(m)-value(base)) / float64(n)
		pts = append(pts, idlePoint{Sessions: n, Mem: m, PerSessKB: per})
		b.logf("  %s: %d sessions after %.0fs: %d KiB RSS, %d KiB PSS, %d processes, %d threads; %.1f KiB per session",
			s.name, n, time.Since(t0).Seconds(), m.RSSKiB, m.PSSKiB, m.Procs, m.Threads, per)
	}
	return pts, nil
}

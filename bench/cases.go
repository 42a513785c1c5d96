package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const mib = 1 << 20

// Sizes of the throughput cases.
func (b *bench) fileSize() int64 {
	if b.opt.quick {
		return 64 * mib
	}
	return 512 * mib
}

func (b *bench) forwardSize() int64 {
	if b.opt.quick {
		return 128 * mib
	}
	return 1024 * mib
}

// warmSize is what a warm-up run moves.
const warmSize = 32 * mib

// dropbearSize caps the Dropbear client's rows: dbclient itself is the
// bottleneck (23–120 MiB/s on this machine, against sshd as much as against
// bastion), so 128 MiB already runs for seconds and its ratio does not move
// with the size, while 512 MiB made these two rows two minutes of a full run.
const dropbearSize = 128 * mib

// cmdTimeout bounds one client command.
const cmdTimeout = 3 * time.Minute

// client runs one OpenSSH client command and returns its wall time.
func (b *bench) client(ctx context.Context, stdin, stdout string, prog string, args ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var errBuf bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &errBuf, max: 4096}
	if stdin != "" {
		f, err := os.Open(stdin)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		cmd.Stdin = f
	}
	if stdout == "" {
		stdout = os.DevNull
	}
	f, err := os.OpenFile(stdout, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cmd.Stdout = f
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && time.Until(b.deadline) > 0 {
			return 0, fmt.Errorf("%s %s: no result after %s", filepath.Base(prog), strings.Join(args, " "), cmdTimeout)
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("%s %s: %v: %s", filepath.Base(prog), strings.Join(args, " "), err, strings.TrimSpace(errBuf.String()))
	}
	return d, nil
}

type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// dropbearVariant, in -ciphers, runs the stream rows with Dropbear's
// dbclient and its defaults instead of OpenSSH's ssh.
const dropbearVariant = "dropbear"

// ctrMAC is the MAC forced with an -ctr cipher: both servers have it, and
// OpenSSH's own first choice (umac-64-etm) is not in bastion's set.
const ctrMAC = "hmac-sha2-256-etm@openssh.com"

func (b *bench) sshArgs(cipher string, rest ...string) []string {
	args := []string{"-F", b.sshConfig}
	if cipher != "default" {
		args = append(args, "-c", cipher)
	}
	if strings.HasSuffix(cipher, "-ctr") {
		// -o, not -m: scp and sftp have no -m.
		args = append(args, "-o", "MACs="+ctrMAC)
	}
	return append(args, rest...)
}

// remote runs a command on s with ssh, or with dbclient for the dropbear
// variant, stdin and stdout from and to files.
func (b *bench) remote(ctx context.Context, s *server, cipher, stdin, command string) (time.Duration, error) {
	if cipher == dropbearVariant {
		// -y -y: no host key checking (a fresh host key each run).
		return b.client(ctx, stdin, "", b.dbclient, "-y", "-y", "-i", b.dropbearKey, "-p", strconv.Itoa(s.port), b.me.name+"@127.0.0.1", command)
	}
	return b.client(ctx, stdin, "", b.tools.ssh, b.sshArgs(cipher, s.alias, command)...)
}

// reps is the number of A B rounds of a case: -reps if given, else
// normal (1 with -quick). The slow file transfers use 2 to stay in budget.
func (b *bench) reps(normal int) int {
	switch {
	case b.opt.reps > 0:
		return b.opt.reps
	case b.opt.quick:
		return 1
	}
	return normal
}

// --- login latency ---------------------------------------------------

func (b *bench) caseLogin(ctx context.Context) error {
	n := 20
	if b.opt.quick {
		n = 5
	}
	b.logf("login latency: ssh host true, %d runs each, alternating", n)
	a, bb, err := b.alternate(ctx, true, n, func(ctx context.Context, s *server, _ bool) (float64, error) {
		d, err := b.client(ctx, "", "", b.tools.ssh, b.sshArgs("default", s.alias, "true")...)
		return float64(d.Microseconds()) / 1000, err
	})
	if err != nil {
		return err
	}
	b.add(&result{ID: "login", Group: "login", Title: "Login latency, `ssh host true`", Unit: "ms", Better: "lower",
		Target: &target{On: "ratio", Op: "<=", Bound: 0.1, Text: "≤ 0.1×"}, A: a, B: bb})
	return nil
}

// --- throughput --------------------------------------------------------

// transfer is one throughput case: run moves size bytes and returns the
// wall time of the client command.
type transfer struct {
	id, group, title string
	size             func() int64
	run              func(ctx context.Context, s *server, cipher string, size int64) (time.Duration, error)
	// anyClient: run handles the dropbear variant too.
	anyClient bool
}

// throughput runs each transfer with each cipher variant, reps rounds of
// A B; only the group's first variant gets a warm-up round.
func (b *bench) throughput(ctx context.Context, reps int, ts []transfer) error {
	return b.throughputCiphers(ctx, reps, b.opt.ciphers, ts)
}

// throughputCiphers is throughput with only the given cipher variants.
func (b *bench) throughputCiphers(ctx context.Context, reps int, ciphers []string, ts []transfer) error {
	warm := true
	for _, cipher := range ciphers {
		for _, t := range ts {
			if cipher == dropbearVariant && !t.anyClient {
				continue
			}
			size := t.size()
			if cipher == dropbearVariant {
				size = min(size, dropbearSize)
			}
			// A rough bound: every run at 60 MiB/s or better.
			need := time.Duration(float64(size*int64(reps)*2)/float64(60*mib)*float64(time.Second)) + 5*time.Second
			if !b.left(need) {
				b.skipped = append(b.skipped, fmt.Sprintf("%s (%s): time budget exhausted", fmt.Sprintf(t.title, sizeLabel(size)), cipherLabel(cipher)))
				continue
			}
			cpu := map[string][]float64{}
			a, bb, err := b.alternate(ctx, warm, reps, func(ctx context.Context, s *server, warm bool) (float64, error) {
				n := size
				if warm {
					n = min(size, warmSize)
				}
				cpu0 := s.cpuSeconds()
				d, err := t.run(ctx, s, cipher, n)
				if err != nil {
					return 0, err
				}
				if !warm {
					// CPU per GiB is steadier than MiB/s on a busy machine.
					s.settle(2 * time.Second)
					cpu[s.name] = append(cpu[s.name], (s.cpuSeconds()-cpu0)/(float64(n)/(1<<30)))
				}
				return float64(n) / mib / d.Seconds(), nil
			})
			if err != nil {
				return fmt.Errorf("%s (%s): %w", fmt.Sprintf(t.title, sizeLabel(size)), cipherLabel(cipher), err)
			}
			warm = false
			// The same cipher on both sides: at least par. The client's
			// defaults, where bastion steers OpenSSH's client to AES-GCM
			// and sshd gets chacha20-poly1305: 1.3x.
			tg := &target{On: "ratio", Op: ">=", Bound: 1.0, Text: "≥ 1.0×"}
			if cipher == "default" {
				tg = &target{On: "ratio", Op: ">=", Bound: 1.3, Text: "≥ 1.3×"}
			}
			b.add(&result{ID: t.id + "/" + cipher, Group: t.group, Title: fmt.Sprintf(t.title, sizeLabel(size)),
				Cipher: cipherLabel(cipher), Unit: "MiB/s", Better: "higher", Target: tg, A: a, B: bb,
				Extra: map[string]any{"cpu_s_per_gib": cpu, "cpu_median_openssh": median(cpu["OpenSSH"]), "cpu_median_bastion": median(cpu["bastion"])}})
		}
	}
	return nil
}

func cipherLabel(c string) string {
	switch {
	case c == "default":
		return "client defaults"
	case c == dropbearVariant:
		return "Dropbear client defaults"
	case strings.HasSuffix(c, "-ctr"):
		return c + " + " + strings.TrimSuffix(ctrMAC, "@openssh.com")
	}
	return strings.TrimSuffix(c, "@openssh.com")
}

func sizeLabel(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// dataFile returns a file of n random bytes in the temp directory.
func (b *bench) dataFile(n int64) (string, error) {
	p := filepath.Join(b.dir, fmt.Sprintf("data-%d.bin", n))
	if st, err := os.Stat(p); err == nil && st.Size() == n {
		return p, nil
	}
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	r := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, mib)
	for left := n; left > 0; left -= int64(len(buf)) {
		_, _ = r.Read(buf)
		if _, err := f.Write(buf[:min(int64(len(buf)), left)]); err != nil {
			f.Close()
			return "", err
		}
	}
	return p, f.Close()
}

func checkSize(path string, want int64) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("transfer left no file: %w", err)
	}
	if st.Size() != want {
		return fmt.Errorf("%s has %d bytes, want %d", path, st.Size(), want)
	}
	return nil
}

func (b *bench) caseStream(ctx context.Context) error {
	b.logf("one-stream throughput: ssh host 'cat > /dev/null' and 'head -c N /dev/zero'")
	return b.throughput(ctx, b.reps(3), []transfer{
		{id: "stream-in", group: "stream", title: "%s in, `ssh host 'cat > /dev/null'`", size: b.fileSize,
			run: func(ctx context.Context, s *server, cipher string, n int64) (time.Duration, error) {
				src, err := b.dataFile(n)
				if err != nil {
					return 0, err
				}
				return b.remote(ctx, s, cipher, src, "cat > /dev/null")
			}, anyClient: true},
		{id: "stream-out", group: "stream", title: "%s out, `ssh host 'head -c … /dev/zero'`", size: b.fileSize,
			run: func(ctx context.Context, s *server, cipher string, n int64) (time.Duration, error) {
				return b.remote(ctx, s, cipher, "", "head -c "+strconv.FormatInt(n, 10)+" /dev/zero")
			}, anyClient: true},
	})
}

// fileCopy is a put or get with scp or sftp, checked by the size of the
// file that arrives.
func (b *bench) fileCopy(kind string, put bool) func(ctx context.Context, s *server, cipher string, n int64) (time.Duration, error) {
	return func(ctx context.Context, s *server, cipher string, n int64) (time.Duration, error) {
		src, err := b.dataFile(n)
		if err != nil {
			return 0, err
		}
		dst := filepath.Join(b.dir, "dst-"+s.alias+".bin")
		os.Remove(dst)
		defer os.Remove(dst)
		var d time.Duration
		from, to := src, s.alias+":"+dst
		if !put {
			from, to = s.alias+":"+src, dst
		}
		switch kind {
		case "scp":
			d, err = b.client(ctx, "", "", b.tools.scp, b.sshArgs(cipher, "-q", from, to)...)
		case "scp -O":
			d, err = b.client(ctx, "", "", b.tools.scp, b.sshArgs(cipher, "-q", "-O", from, to)...)
		case "sftp", "sftp builtin":
			batch := filepath.Join(b.dir, "sftp-batch")
			line := fmt.Sprintf("put %s %s\n", src, dst)
			if !put {
				line = fmt.Sprintf("get %s %s\n", src, dst)
			}
			if err := os.WriteFile(batch, []byte(line), 0o600); err != nil {
				return 0, err
			}
			args := []string{"-q", "-b", batch}
			if kind == "sftp builtin" && s.name == "bastion" {
				// bastion's own server, as an exec of the bastion binary
				// (what the sftp subsystem runs when no OpenSSH
				// sftp-server is installed); OpenSSH keeps its own.
				args = append(args, "-s", b.bastionBin+" sftp-server")
			}
			d, err = b.client(ctx, "", "", b.tools.sftp, b.sshArgs(cipher, append(args, s.alias)...)...)
		}
		if err != nil {
			return 0, err
		}
		return d, checkSize(dst, n)
	}
}

func (b *bench) caseSCP(ctx context.Context) error {
	b.logf("file transfer: scp (SFTP mode) and scp -O")
	return b.throughput(ctx, b.reps(2), []transfer{
		{id: "scp-put", group: "scp", title: "scp put %s", size: b.fileSize, run: b.fileCopy("scp", true)},
		{id: "scp-get", group: "scp", title: "scp get %s", size: b.fileSize, run: b.fileCopy("scp", false)},
		{id: "scp-O-put", group: "scp", title: "scp -O put %s", size: b.fileSize, run: b.fileCopy("scp -O", true)},
		{id: "scp-O-get", group: "scp", title: "scp -O get %s", size: b.fileSize, run: b.fileCopy("scp -O", false)},
	})
}

func (b *bench) caseSFTP(ctx context.Context) error {
	b.logf("file transfer: sftp")
	if err := b.throughput(ctx, b.reps(2), []transfer{
		{id: "sftp-put", group: "sftp", title: "sftp put %s", size: b.fileSize, run: b.fileCopy("sftp", true)},
		{id: "sftp-get", group: "sftp", title: "sftp get %s", size: b.fileSize, run: b.fileCopy("sftp", false)},
	}); err != nil {
		return err
	}
	// bastion's built-in sftp-server against OpenSSH's sshd with its own
	// sftp-server, with the same cipher; set beside the rows above (where
	// bastion also runs OpenSSH's sftp-server) it isolates the server.
	b.logf("file transfer: sftp, bastion's built-in sftp-server")
	same := []string{}
	for _, c := range b.opt.ciphers {
		if c == "aes128-gcm@openssh.com" {
			same = append(same, c)
		}
	}
	return b.throughputCiphers(ctx, b.reps(2), same, []transfer{
		{id: "sftp-builtin-put", group: "sftp", title: "sftp put %s, bastion's built-in sftp-server", size: b.fileSize, run: b.fileCopy("sftp builtin", true)},
		{id: "sftp-builtin-get", group: "sftp", title: "sftp get %s, bastion's built-in sftp-server", size: b.fileSize, run: b.fileCopy("sftp builtin", false)},
	})
}

// --- port forwarding ---------------------------------------------------

func (b *bench) caseForward(ctx context.Context) error {
	b.logf("port forwarding: ssh -L to a local sink")
	return b.throughput(ctx, b.reps(3), []transfer{
		{id: "forward", group: "forward", title: "%s through `ssh -L`", size: b.forwardSize, run: b.forwardOnce},
	})
}

// forwardOnce starts ssh -N -L, waits until the forward works, then times
// size bytes from a local writer through the tunnel to a local sink,
// until the sink has read them all and seen EOF.
func (b *bench) forwardOnce(ctx context.Context, s *server, cipher string, size int64) (time.Duration, error) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer sink.Close()
	got := make(chan int64, 16)
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				got <- n
			}()
		}
	}()
	lport, err := freePort()
	if err != nil {
		return 0, err
	}
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(lport))
	fwd := fmt.Sprintf("127.0.0.1:%d:%s", lport, sink.Addr().String())
	cctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, b.tools.ssh, b.sshArgs(cipher, "-N", "-o", "ExitOnForwardFailure=yes", "-L", fwd, s.alias)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var errBuf bytes.Buffer
	cmd.Stderr = &limitedBuffer{buf: &errBuf, max: 4096}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	// Ready when a probe connection goes through to the sink.
	ready := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", local, time.Second)
		if err == nil {
			c.Close()
			select {
			case <-got:
			case <-time.After(5 * time.Second):
				return 0, errors.New("ssh -L accepted but nothing reached the sink")
			}
			break
		}
		select {
		case err := <-exited:
			exited <- err
			return 0, fmt.Errorf("ssh -L exited: %v: %s", err, strings.TrimSpace(errBuf.String()))
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(ready) {
			return 0, errors.New("ssh -L did not start forwarding within 15s")
		}
	}

	c, err := net.Dial("tcp", local)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 256*1024)
	rand.NewChaCha8([32]byte{2}).Read(buf)
	t0 := time.Now()
	werr := make(chan error, 1)
	go func() {
		for left := size; left > 0; left -= int64(len(buf)) {
			if _, err := c.Write(buf[:min(int64(len(buf)), left)]); err != nil {
				werr <- err
				return
			}
		}
		werr <- c.(*net.TCPConn).CloseWrite()
	}()
	select {
	case n := <-got:
		d := time.Since(t0)
		if n != size {
			return 0, fmt.Errorf("sink got %d bytes, want %d", n, size)
		}
		return d, nil
	case err := <-werr:
		if err != nil {
			return 0, fmt.Errorf("write to the tunnel: %w", err)
		}
		select {
		case n := <-got:
			d := time.Since(t0)
			if n != size {
				return 0, fmt.Errorf("sink got %d bytes, want %d", n, size)
			}
			return d, nil
		case <-cctx.Done():
			return 0, errors.New("the sink never saw the end of the stream")
		}
	case <-cctx.Done():
		return 0, errors.New("forwarding did not finish in time")
	}
}

var loginLineRE = regexp.MustCompile(`msg=login .*?kex=(\S+) cipher=(\S+)`)

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// negotiated asks ssh -v what a client with these options agrees on; for
// dbclient, which has no -v in Debian's build, bastion's login line says
// it (sshd logs nothing of it at LogLevel INFO).
func (b *bench) negotiated(ctx context.Context, s *server, cipher string) string {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if cipher == dropbearVariant {
		if s.name != "bastion" {
			return "its first choice, chacha20-poly1305 (not logged by sshd)"
		}
		if _, err := b.remote(cctx, s, cipher, "", "true"); err != nil {
			return "dbclient failed: " + err.Error()
		}
		logs, _ := os.ReadFile(s.logPath)
		m := loginLineRE.FindAllSubmatch(logs, -1)
		if len(m) == 0 {
			return "no login line in bastion's log"
		}
		last := m[len(m)-1]
		return fmt.Sprintf("kex %s, cipher %s", last[1], last[2])
	}
	out, _ := exec.CommandContext(cctx, b.tools.ssh, b.sshArgs(cipher, "-v", "-o", "LogLevel=DEBUG1", s.alias, "true")...).CombinedOutput()
	var kex, c string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "debug1: kex: algorithm: "); ok {
			kex = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "debug1: kex: server->client cipher: "); ok {
			c = strings.Fields(v)[0]
		}
	}
	return fmt.Sprintf("kex %s, cipher %s", kex, c)
}

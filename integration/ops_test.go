package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/bastion-ssh/bastion/session/sessiontest"
)

var opsAddrRE = regexp.MustCompile(`msg="operations listener" address=(\S+)`)

// opsURL returns the base URL of the server's operations listener.
func (s *server) opsURL(t *testing.T) string {
	t.Helper()
	var addr string
	waitFor(t, "the operations listener log line", 10*time.Second, func() bool {
		m := opsAddrRE.FindStringSubmatch(s.logs())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return "http://" + addr
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue returns the value of the first sample of name whose label
// set contains all of labels.
func metricValue(t *testing.T, body, name string, labels ...string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v
	}
	return 0
}

func TestMetricsAfterRealSessions(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	echo := sessiontest.EchoServer(t)
	s := startDev(t, "ops:\n  listen: 127.0.0.1:0\nforwarding:\n  allow: [\""+echo+"\"]\n")
	base := s.opsURL(t)
	if code, body := httpGet(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if _, _, code := s.run(t, strings.Repeat("x", 5000), "--", "cat >/dev/null; echo done"); code != 0 {
		t.Fatalf("session failed: %d", code)
	}
	s.runAs(t, userKey(t, t.TempDir(), "stranger"), s.user, "", "--", "true")
	s.run(t, "", "-L", "127.0.0.1:"+freePort(t)+":10.1.1.1:1", "--", "true")
	lport := freePort(t)
	wait, stop := s.bg(t, "-N", "-L", "127.0.0.1:"+lport+":"+echo)
	waitFor(t, "forward", 10*time.Second, func() bool { ok, _ := dialEcho("127.0.0.1:" + lport); return ok })
	stop()
	wait()
	// A denied forward is only tried when a client connects to it.
	dport := freePort(t)
	wait2, stop2 := s.bg(t, "-N", "-L", "127.0.0.1:"+dport+":10.1.1.1:1")
	waitFor(t, "a denied forward", 10*time.Second, func() bool {
		dialEcho("127.0.0.1:" + dport)
		return strings.Contains(s.logs(), "forward denied")
	})
	stop2()
	wait2()

	_, body := httpGet(t, base+"/metrics")
	checks := []struct {
		name   string
		labels []string
		min    float64
	}{
		{"bastion_connections_total", nil, 3},
		{"bastion_auth_attempts_total", []string{`method="publickey"`, `result="success"`}, 2},
		{"bastion_auth_attempts_total", []string{`result="denied"`}, 1},
		{"bastion_bytes_total", []string{`direction="in"`}, 5000},
		{"bastion_bytes_total", []string{`direction="out"`}, 5},
		{"bastion_session_duration_seconds_count", []string{`backend="local"`, `kind="exec"`}, 1},
		{"bastion_forwards_total", []string{`result="opened"`}, 1},
		{"bastion_forwards_total", []string{`result="denied"`}, 1},
	}
	for _, c := range checks {
		if v := metricValue(t, body, c.name, c.labels...); v < c.min {
			t.Errorf("%s%v = %v, want >= %v", c.name, c.labels, v, c.min)
		}
	}
	if strings.Contains(body, s.user) || strings.Contains(body, "127.0.0.1") {
		t.Errorf("metrics carry a user name or an address as a label")
	}
}

func TestReadinessFlipsAtDrain(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "ops:\n  listen: 127.0.0.1:0\nlimits:\n  shutdown_grace: 5s\n")
	base := s.opsURL(t)
	waitFor(t, "ready", 10*time.Second, func() bool { code, _ := httpGet(t, base+"/readyz"); return code == 200 })
	wait, _ := s.bg(t, "sleep 60")
	waitFor(t, "the session", 15*time.Second, func() bool { return countLog(s, "session start") >= 1 })
	s.cmd.Process.Signal(syscall.SIGTERM)
	// Not ready at once, while the session is still being drained.
	waitFor(t, "readyz to fail", 2*time.Second, func() bool {
		code, body := httpGet(t, base+"/readyz")
		return code == 503 && strings.Contains(body, "draining")
	})
	_, metrics := httpGet(t, base+"/metrics")
	if v := metricValue(t, metrics, "bastion_ready"); v != 0 {
		t.Errorf("bastion_ready = %v during drain", v)
	}
	wait()
}

func TestOpsPortTaken(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "ops:\n  listen: 127.0.0.1:0\n")
	base := strings.TrimPrefix(s.opsURL(t), "http://")
	dir := t.TempDir()
	key := userKey(t, dir, "k")
	cfg := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfg, []byte("ops:\n  listen: "+base+"\n"), 0o600)
	out, err := exec.Command(bastionBinary(t), "dev", "--listen", "127.0.0.1:0", "--state-dir", dir+"/st",
		"--authorized-keys", key+".pub", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cannot start the operations listener") ||
		!strings.Contains(string(out), "key=ops.listen") || !strings.Contains(string(out), "address already in use") {
		t.Fatalf("err %v, output:\n%s", err, out)
	}
}

func TestAuditLog(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	dir := t.TempDir()
	auditPath := filepath.Join(dir, "audit.log")
	s := startDev(t, "audit:\n  output: "+auditPath+"\n")
	hostile := "echo \"$(printf 'x\\ny')\" '\"},{\"event\":\"auth.success' \x1b[31m"
	s.run(t, "", "--", hostile)
	s.runAs(t, userKey(t, dir, "stranger"), s.user, "", "--", "true")
	s.run(t, "", "--", "exit 5")
	var events []map[string]any
	waitFor(t, "session.end events", 10*time.Second, func() bool {
		events = nil
		f, err := os.Open(auditPath)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var e map[string]any
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("audit line is not JSON: %q: %v", sc.Text(), err)
			}
			events = append(events, e)
		}
		n := 0
		for _, e := range events {
			if e["event"] == "session.end" {
				n++
			}
		}
		return n >= 2
	})
	seen := map[string]int{}
	for _, e := range events {
		seen[e["event"].(string)]++
		if e["event"] == "session.end" && e["command"] == "exit 5" && e["exit_status"] != float64(5) {
			t.Errorf("session.end for exit 5: %v", e)
		}
		if e["event"] == "session.start" && e["command"] == hostile && e["user"] != s.user {
			t.Errorf("hostile command event: %v", e)
		}
	}
	for _, want := range []string{"auth.success", "auth.failure", "session.start", "session.end"} {
		if seen[want] == 0 {
			t.Errorf("no %s event in %v", want, seen)
		}
	}
	if seen["auth.success"] != 2 {
		t.Errorf("auth.success = %d: the hostile command forged an event", seen["auth.success"])
	}
}

func TestSessionRecording(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	recDir := t.TempDir()
	s := startDev(t, "recording:\n  dir: "+recDir+"\n")
	p := startPTY(t, s)
	p.send("printf 'REC-%s-%s\\n' one two\r")
	p.expect(`REC-one-two`)
	p.send("exit\r")
	<-p.done
	var files []string
	waitFor(t, "the recording", 10*time.Second, func() bool {
		files, _ = filepath.Glob(filepath.Join(recDir, s.user, "*.cast"))
		return len(files) == 1
	})
	if !regexp.MustCompile(`/\d{8}-\d{6}-[0-9a-f]+-\d+\.cast$`).MatchString(files[0]) {
		t.Errorf("recording name %s does not say when", files[0])
	}
	out := replay(t, files[0])
	p.mu.Lock()
	term := p.buf.String()
	p.mu.Unlock()
	if !strings.Contains(out, "REC-one-two") || !strings.Contains(term, strings.TrimSpace(lastLine(out, "REC-one-two"))) {
		t.Fatalf("replayed recording does not show the session:\nreplay: %q\nterminal: %q", out, term)
	}
	// The real player replays it (it wants a terminal).
	if path, err := exec.LookPath("asciinema"); err == nil {
		cmd := exec.Command(path, "play", "-i", "0.05", "-s", "20", files[0])
		tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
		if err != nil {
			t.Fatal(err)
		}
		played, _ := io.ReadAll(tty) // EIO when the player exits
		tty.Close()
		if err := cmd.Wait(); err != nil || !strings.Contains(string(played), "REC-one-two") {
			t.Errorf("asciinema play: %v\n%q", err, played)
		}
	} else if os.Getenv("CI") != "" {
		t.Error("asciinema is not installed (apt-get install asciinema)")
	}
}

// replay concatenates the output events of an asciicast v2 file, checking
// its structure on the way.
func replay(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	sc.Scan()
	var hdr map[string]any
	if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil || hdr["version"] != float64(2) {
		t.Fatalf("header %q: %v", sc.Text(), err)
	}
	var out strings.Builder
	last := -1.0
	for sc.Scan() {
		var ev []any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("event %q: %v", sc.Text(), err)
		}
		ts := ev[0].(float64)
		if ts < last {
			t.Fatalf("time goes backwards at %q", sc.Text())
		}
		last = ts
		if ev[1] == "o" {
			out.WriteString(ev[2].(string))
		}
	}
	return out.String()
}

func lastLine(s, containing string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, containing) && !strings.Contains(l, "printf") {
			return l
		}
	}
	return containing
}

func TestRecordingDirUnwritable(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	dir := t.TempDir()
	blocker := filepath.Join(dir, "not-a-dir")
	os.WriteFile(blocker, []byte("x"), 0o600)
	s := startDev(t, "ops:\n  listen: 127.0.0.1:0\nrecording:\n  dir: "+blocker+"\n")
	out, _, code := s.run(t, "", "-tt", "--", "echo still-works")
	if code != 0 || !strings.Contains(out, "still-works") {
		t.Fatalf("login with a broken recording dir: code %d out %q", code, out)
	}
	_, body := httpGet(t, s.opsURL(t)+"/metrics")
	if v := metricValue(t, body, "bastion_recording_errors_total"); v < 1 {
		t.Errorf("bastion_recording_errors_total = %v", v)
	}
	if !strings.Contains(s.logs(), "cannot record session") {
		t.Errorf("no log line for the failed recording")
	}
}

// TestDevKeepsWhatTheConfigSets: bastion dev fills in its own defaults
// only for keys the config leaves unset; a key set to serve's default
// (audit.output: stdout) is kept, not taken for unset.
func TestDevKeepsWhatTheConfigSets(t *testing.T) {
	needTools(t, "ssh")
	t.Parallel()
	s := startDev(t, "audit:\n  output: stdout\n")
	s.run(t, "", "--", "true")
	waitFor(t, "the audit events on stdout", 10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return strings.Contains(s.stdout.String(), `"event":"auth.success"`)
	})
	if strings.Contains(s.logs(), `"event":"auth.success"`) {
		t.Errorf("audit events on stderr although audit.output is stdout")
	}
}

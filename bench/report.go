package main

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// notes.md is the analysis kept below the generated table (profiles,
// proposed changes); edit it there, not in docs/benchmarks.md.
//
//go:embed notes.md
var notes string

// report prints the table and, for a full run (or with -out), writes
// benchmarks.md and benchmarks.json.
func (b *bench) report() {
	sort.SliceStable(b.results, func(i, j int) bool { return b.rank(b.results[i]) < b.rank(b.results[j]) })
	table := b.table()
	fmt.Fprintf(b.out, "\n%s\n", table)
	for _, s := range b.skipped {
		fmt.Fprintf(b.out, "skipped: %s\n", s)
	}

	full := !b.opt.quick && len(b.opt.cases) == len(groups) && len(b.skipped) == 0
	dir := b.opt.outDir
	if dir == "" {
		if !full {
			fmt.Fprintln(b.out, "(a quick, partial or incomplete run: docs/ left as it is; use -out DIR to write it anyway)")
			return
		}
		dir = filepath.Join(b.root, "docs")
	}
	if !b.opt.write {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(b.out, "bench: %v\n", err)
		return
	}
	md := b.markdown(table)
	js, _ := json.MarshalIndent(saved{b.env, map[string]any{"quick": b.opt.quick, "reps_flag": b.opt.reps, "ciphers": b.opt.ciphers, "login_runs": b.loginRuns()},
		b.negotiatedAll, b.results, b.skipped}, "", "  ")
	for _, f := range []struct {
		name string
		data []byte
	}{{"benchmarks.md", []byte(md)}, {"benchmarks.json", append(js, '\n')}} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			fmt.Fprintf(b.out, "bench: %v\n", err)
			return
		}
		fmt.Fprintf(b.out, "wrote %s\n", p)
	}
}

// saved is benchmarks.json.
type saved struct {
	Env        envInfo           `json:"env"`
	Options    map[string]any    `json:"options"`
	Negotiated map[string]string `json:"negotiated,omitempty"`
	Results    []*result         `json:"results"`
	Skipped    []string          `json:"skipped,omitempty"`
}

// rerender rewrites benchmarks.md from benchmarks.json, for when only
// bench/notes.md or the layout changed.
func (b *bench) rerender() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	dir := b.opt.outDir
	if dir == "" {
		dir = filepath.Join(root, "docs")
	}
	data, err := os.ReadFile(filepath.Join(dir, "benchmarks.json"))
	if err != nil {
		return err
	}
	var sv saved
	if err := json.Unmarshal(data, &sv); err != nil {
		return fmt.Errorf("benchmarks.json: %w", err)
	}
	b.env, b.negotiatedAll, b.results, b.skipped = sv.Env, sv.Negotiated, sv.Results, sv.Skipped
	b.opt.quick = sv.Env.Quick
	b.opt.ciphers = nil
	if cs, ok := sv.Options["ciphers"].([]any); ok {
		for _, c := range cs {
			if s, ok := c.(string); ok {
				b.opt.ciphers = append(b.opt.ciphers, s)
			}
		}
	}
	for i, r := range b.results {
		r.order = i
	}
	p := filepath.Join(dir, "benchmarks.md")
	if err := os.WriteFile(p, []byte(b.markdown(b.table())), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(b.out, "wrote %s\n", p)
	return nil
}

func (b *bench) loginRuns() int {
	if b.opt.quick {
		return 5
	}
	return 20
}

// rank orders the table like the list of cases.
func (b *bench) rank(r *result) int {
	order := []string{"login", "stream", "scp", "sftp", "forward", "handshake", "idle"}
	for i, g := range order {
		if r.Group == g {
			ci := 0
			for k, c := range b.opt.ciphers {
				if cipherLabel(c) == r.Cipher {
					ci = k
				}
			}
			return i*10000 + ci*1000 + r.order
		}
	}
	return 1 << 30
}

func (b *bench) table() string {
	var sb strings.Builder
	sb.WriteString("| Case | Cipher | OpenSSH | bastion | bastion / OpenSSH | Target | Met |\n")
	sb.WriteString("|---|---|--:|--:|--:|---|---|\n")
	for _, r := range b.results {
		met := ""
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*r.Met]
		}
		tg := ""
		if r.Target != nil {
			tg = r.Target.Text
		}
		better := map[string]string{"lower": "lower is better", "higher": "higher is better"}[r.Better]
		fmt.Fprintf(&sb, "| %s (%s, %s) | %s | %s | %s | %.2f× | %s | %s |\n",
			r.Title, r.Unit, better, r.Cipher, fmtValue(r.MedA, r.Unit), fmtValue(r.MedB, r.Unit), r.Ratio, tg, met)
	}
	return sb.String()
}

// cpuTable is the server-side CPU of each throughput row: on a shared
// machine it moves less than the wall-clock rate.
func (b *bench) cpuTable() string {
	var sb strings.Builder
	for _, r := range b.results {
		if r.Unit != "MiB/s" || r.Extra == nil {
			continue
		}
		ca, _ := r.Extra["cpu_median_openssh"].(float64)
		cb, _ := r.Extra["cpu_median_bastion"].(float64)
		if ca == 0 || cb == 0 {
			continue
		}
		if sb.Len() == 0 {
			sb.WriteString("\nServer CPU per GiB moved (CPU seconds of the server's processes and of the remote command, from /proc; medians):\n\n")
			sb.WriteString("| Case | Cipher | OpenSSH | bastion | bastion / OpenSSH |\n|---|---|--:|--:|--:|\n")
		}
		fmt.Fprintf(&sb, "| %s | %s | %.2f s | %.2f s | %.2f× |\n", r.Title, r.Cipher, ca, cb, cb/ca)
	}
	return sb.String()
}

func fmtValue(v float64, unit string) string {
	switch unit {
	case "ms", "KiB":
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func (b *bench) markdown(table string) string {
	var sb strings.Builder
	e := b.env
	kind := "a full run"
	if b.opt.quick {
		kind = "a -quick run"
	}
	fmt.Fprintf(&sb, "# Benchmarks: bastion side by side with OpenSSH\n\n")
	fmt.Fprintf(&sb, "<!-- Generated by `go run ./bench`; the Notes section comes from bench/notes.md. Do not edit by hand. -->\n\n")
	fmt.Fprintf(&sb, "Measured with `go run ./bench` (%s) on %s. Both servers ran on this machine at the same time, on loopback, "+
		"serving the same user with the same ed25519 host key and user key; each case ran OpenSSH and bastion in turn "+
		"(a warm-up each, then A B A B …). The table shows medians; the ratio is bastion / OpenSSH. "+
		"Raw samples are in [benchmarks.json](benchmarks.json).\n\n", kind, e.Date)
	fmt.Fprintf(&sb, "- **Machine:** %d cores, %s, %s GiB RAM; %s, Linux %s\n", e.Cores, e.CPU, e.MemoryGiB, e.OS, e.Kernel)
	fmt.Fprintf(&sb, "- **OpenSSH:** %s (server banner `%s`), sshd started with `-D -e -f` a generated config, UsePAM no\n", e.OpenSSH, e.Sshd)
	fmt.Fprintf(&sb, "- **bastion:** %s, `bastion dev` with the local backend; Go %s, golang.org/x/crypto %s\n", e.Bastion, e.Go, e.XCrypto)
	if len(b.negotiatedAll) > 0 {
		var keys []string
		for k := range b.negotiatedAll {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		sb.WriteString("- **Negotiated** (by OpenSSH's client, or Dropbear's where the variant says so):")
		for i, k := range keys {
			if i > 0 {
				sb.WriteString(";")
			}
			fmt.Fprintf(&sb, " %s → %s", k, b.negotiatedAll[k])
		}
		sb.WriteString("\n")
	}
	sb.WriteString("\n")
	sb.WriteString(table)
	if len(b.skipped) > 0 {
		sb.WriteString("\nSkipped: " + strings.Join(b.skipped, "; ") + "\n")
	}
	sb.WriteString(b.cpuTable())
	sb.WriteString(method)
	if n := strings.TrimSpace(notes); n != "" {
		sb.WriteString("\n" + n + "\n")
	}
	return sb.String()
}

const method = `
## How each case is measured

- **Login latency:** wall time of the whole ` + "`ssh host true`" + ` client process (connect, key exchange, public key authentication, exec, exit status), 20 runs per server.
- **Throughput:** wall time of the whole client command (login included) moving the stated amount; MiB/s. ` + "`ssh host 'cat > /dev/null' < file`" + ` (in), ` + "`ssh host 'head -c N /dev/zero' > /dev/null`" + ` (out), ` + "`scp`" + ` (SFTP mode, the default since OpenSSH 9.0), ` + "`scp -O`" + ` (the legacy protocol), ` + "`sftp -b`" + ` put and get. Files live on tmpfs and the arriving file's size is checked. "client defaults" lets the client pick the cipher; the other rows pass ` + "`-c`" + `. The Dropbear rows run Debian's ` + "`dbclient`" + ` with its defaults and move 128 MiB: dbclient itself is the bottleneck there.
- **Port forwarding:** ` + "`ssh -N -L`" + ` to a sink in the bench process; time from the first byte written to the sink's EOF.
- **Handshake rate:** 32 goroutines of a golang.org/x/crypto/ssh client dial, complete the key exchange and public key authentication, and close, for 10 s per run. The client is pinned to curve25519-sha256, ssh-ed25519 and aes128-gcm so that both servers do the same work. Server CPU comes from /proc (for sshd the listener's own and its reaped children's time).
- **Memory per idle session:** a fresh server, then 500 and 2000 connections, each with a pty and a login shell that has printed its prompt; (memory after − memory before) / sessions, 3 s after the last one opened. OpenSSH: PSS summed over the listener and every sshd process below it; bastion: RSS of its process. The users' shells are not counted for either.
- **Shells:** both servers give the sessions an empty temporary ` + "`$HOME`" + ` (sshd through ` + "`SetEnv HOME=`" + `, bastion through its users file), so that the user's rc files (on the machine measured here, root's ~/.bashrc runs ` + "`pyenv init`" + `, about 100 ms of CPU per login shell) are not what is measured; ` + "`-real-home`" + ` turns that off.
- **Server CPU per GiB:** the CPU time the server used during each measured transfer, from /proc (bastion's process and its reaped children; sshd's listener with its reaped per-connection processes and their children), divided by the GiB moved. It includes the remote command (cat, head, scp, sftp-server), the same programs for both.
- The bench's own clients and load generator run on the same cores as the servers, in the same way for both; other load on the machine shows up as spread between repetitions (see the samples in the JSON).
`

package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// soakReport is what a soak measured.
type soakReport struct {
	opt              soakOptions
	machine, bastion string
	openssh          string
	started          time.Time
	wall             time.Duration
	rows             []soakRow
	kinds            []kindTotals

	baseGoroutines, endGoroutines int
	baseRSS, endRSS               int64 // KiB
	leftProcs                     int   // session processes left after every client went
	cpu, childCPU, clientCPU      float64
	loginOK, loginBad             int64
	loginSkipped                  int64
	loginRefused                  int64          // as a fault expects
	told                          map[string]int // what users read when a fault ended a session or refused a login
	errs                          []string
	nErrs                         int
	load                          string // load average at the end
	faults                        []string
	finalNotes, finalProblems     []string // soakOptions.finalCheck's
}

// soakRow is one interval.
type soakRow struct {
	at                 time.Duration
	open               int64
	logins, loginFails int64
	p50, p99, max      time.Duration
	loginRate          float64
	rssKiB             int64
	heapMiB            float64 // Go heap in use
	goroutines         int
	cores              float64
	mbps               float64
	load               string
	note               string // soakOptions.observe's
}

type kindTotals struct {
	kind              string
	sessions, failed  int64
	sent, ok, corrupt int64
	cut, cutBytes     int64 // ended by a fault on purpose, and their chunks in flight
}

func (k kindTotals) lost() int64 { return k.sent - k.ok - k.corrupt - k.cutBytes }

// problems are the reasons the run failed: lost or corrupted bytes,
// failed sessions or logins, leaked goroutines or processes.
func (r *soakReport) problems() []string {
	var p []string
	var lost, corrupt, failed int64
	for _, k := range r.kinds {
		lost += k.lost()
		corrupt += k.corrupt
		failed += k.failed
	}
	if lost != 0 {
		p = append(p, fmt.Sprintf("%d bytes lost", lost))
	}
	if corrupt != 0 {
		p = append(p, fmt.Sprintf("%d bytes came back different", corrupt))
	}
	if failed != 0 {
		p = append(p, fmt.Sprintf("%d sessions or copies failed", failed))
	}
	if r.loginBad != 0 {
		p = append(p, fmt.Sprintf("%d logins failed", r.loginBad))
	}
	if r.endGoroutines > r.baseGoroutines+goroutineSlack {
		p = append(p, fmt.Sprintf("bastion has %d goroutines after every client left, %d before the load", r.endGoroutines, r.baseGoroutines))
	}
	p = append(p, r.finalProblems...)
	if r.leftProcs != 0 {
		p = append(p, fmt.Sprintf("%d session processes left under bastion after every client left", r.leftProcs))
	}
	var opened int64
	for _, k := range r.kinds[:3] {
		opened += k.sessions - k.failed
	}
	if opened == 0 {
		p = append(p, errNoSessions.Error())
	}
	for _, e := range r.errs {
		p = append(p, "  "+e)
	}
	if r.nErrs > len(r.errs) {
		p = append(p, fmt.Sprintf("  ... and %d more errors", r.nErrs-len(r.errs)))
	}
	return p
}

func (r *soakReport) markdown() string {
	var b strings.Builder
	o := r.opt
	backend := o.backend
	if backend == "" {
		backend = "local"
	}
	fmt.Fprintf(&b, "### Soak, %s backend: %d sessions for %s, %.0f logins/s\n\n", backend, o.sessions, o.duration, o.loginRate)
	fmt.Fprintf(&b, "- command: `%s`\n", strings.TrimSpace(o.command))
	fmt.Fprintf(&b, "- run: %s, %s wall\n", r.started.Format("2006-01-02 15:04 UTC"), r.wall.Round(time.Second))
	fmt.Fprintf(&b, "- machine: %s; load average at the end %s\n", r.machine, r.load)
	fmt.Fprintf(&b, "- bastion: %s; OpenSSH clients: %s\n", r.bastion, r.openssh)
	if backend == "local" {
		fmt.Fprintf(&b, "- mix: 40%% pty sessions (an interactive shell that runs `stty raw -echo; exec cat`), 30%% exec `cat`, 30%% `ssh -L` streams to a loopback echo server, each on its own connection, each moving random chunks at %d B/s each way on average and checking every chunk that comes back; plus %d workers copying random files with OpenSSH's `scp`, `scp -O` and `sftp` and comparing SHA-256; plus %.0f new logins/s (x/crypto client: TCP, key exchange, public-key auth)\n",
			o.rate, o.openssh, o.loginRate)
	} else {
		login := "TCP, key exchange, public-key auth"
		if o.loginCommand != "" {
			login += ", then `" + o.loginCommand + "` in the account's pod"
		}
		fmt.Fprintf(&b, "- mix: %d accounts taking the sessions in turn; 40%% pty sessions (an interactive shell in the account's pod that runs `stty raw -echo; exec cat`), 30%% exec `cat` in the pod, 30%% `ssh -L` streams to `%s`, each on its own connection, each moving random chunks at %d B/s each way on average and checking every chunk that comes back; plus %.1f new logins/s, the accounts in turn (x/crypto client: %s)\n",
			max(len(o.accounts), 1), o.forwardTo, o.rate, o.loginRate, login)
	}
	fmt.Fprintf(&b, "- the clients run on the same machine as bastion: soak process %.0f CPU s; bastion's process %.0f CPU s, its session processes (cat, shells, scp, sftp-server) %.0f CPU s\n\n", r.clientCPU, r.cpu, r.childCPU)

	var sent, ok, corrupt, lost int64
	b.WriteString("| traffic | sessions / copies | failed | bytes sent | bytes back intact | bytes different | bytes lost |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, k := range r.kinds {
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %d | %d |\n", k.kind, k.sessions, k.failed, fmtMiB(k.sent), fmtMiB(k.ok), k.corrupt, k.lost())
		sent += k.sent
		ok += k.ok
		corrupt += k.corrupt
		lost += k.lost()
	}
	fmt.Fprintf(&b, "| **total** | | | %s | %s | **%d** | **%d** |\n\n", fmtMiB(sent), fmtMiB(ok), corrupt, lost)

	for _, f := range r.faults {
		fmt.Fprintf(&b, "Fault at %s.\n\n", f)
	}
	for _, k := range r.kinds {
		if k.cut > 0 {
			fmt.Fprintf(&b, "%s: %d sessions ended by the fault on purpose (their %d bytes in flight are not counted as lost).\n\n", k.kind, k.cut, k.cutBytes)
		}
	}
	if len(r.told) > 0 {
		b.WriteString("What users read (count, what):\n\n")
		keys := make([]string, 0, len(r.told))
		for k := range r.told {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "- %d × %s\n", r.told[k], k)
		}
		b.WriteString("\n")
	}
	if r.loginRefused > 0 {
		fmt.Fprintf(&b, "Logins refused during the fault as expected: %d.\n\n", r.loginRefused)
	}
	fmt.Fprintf(&b, "Logins: %d ok, %d failed, %d not started because 256 were already in flight (the client was saturated).\n\n", r.loginOK, r.loginBad, r.loginSkipped)
	noteCol, noteSep := "", ""
	if o.observe != nil {
		noteCol, noteSep = " cluster |", "---|"
	}
	b.WriteString("| time | sessions open | logins/s | login p50 | login p99 | login max | bastion RSS | Go heap in use | goroutines | bastion CPU (cores) | checked MB/s | load avg |" + noteCol + "\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|" + noteSep + "\n")
	for _, row := range r.rows {
		note := ""
		if o.observe != nil {
			note = " " + row.note + " |"
		}
		fmt.Fprintf(&b, "| %s | %d | %.1f | %s | %s | %s | %d MiB | %.0f MiB | %d | %.2f | %.2f | %s |%s\n",
			row.at.Round(time.Second), row.open, row.loginRate, ms(row.p50), ms(row.p99), ms(row.max),
			row.rssKiB/1024, row.heapMiB, row.goroutines, row.cores, row.mbps, row.load, note)
	}
	var full []soakRow // rows with every session open: the steady state
	for _, row := range r.rows {
		if row.open == int64(o.sessions) {
			full = append(full, row)
		}
	}
	if len(full) >= 2 {
		f, l := full[0], full[len(full)-1]
		fmt.Fprintf(&b, "\nSteady state (every session open, %s to %s): goroutines %d → %d, RSS %d → %d MiB, Go heap in use %.0f → %.0f MiB.\n",
			f.at.Round(time.Second), l.at.Round(time.Second), f.goroutines, l.goroutines, f.rssKiB/1024, l.rssKiB/1024, f.heapMiB, l.heapMiB)
	}
	fmt.Fprintf(&b, "\nBefore the load: %d goroutines, %d MiB RSS. After every client left: %d goroutines, %d MiB RSS, %d session processes left.\n",
		r.baseGoroutines, r.baseRSS/1024, r.endGoroutines, r.endRSS/1024, r.leftProcs)
	for _, n := range r.finalNotes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	if p := r.problems(); len(p) > 0 {
		fmt.Fprintf(&b, "\n**Problems:**\n\n```\n%s\n```\n", strings.Join(p, "\n"))
	} else {
		b.WriteString("\nNo byte lost or changed, no failed session or login, no goroutine or process left behind.\n")
	}
	return b.String()
}

func fmtMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Event types.
const (
	AuthSuccess = "auth.success"
	AuthFailure = "auth.failure"
	// AuthFailureSummary counts a source's failed attempts that were not
	// recorded one by one (more than 10 a minute).
	AuthFailureSummary = "auth.failure.summary"
	SessionStart       = "session.start"
	SessionEnd         = "session.end"
	Become             = "become"
	// BecomeDeny is a become the person may not do (reason says why).
	BecomeDeny   = "become.deny"
	ForwardOpen  = "forward.open"
	ForwardClose = "forward.close"
	ForwardDeny  = "forward.deny"
	// ForwardListen is a listener opened for the client: ssh -R (kind
	// remote) or an agent socket (kind agent).
	ForwardListen = "forward.listen"
	PodCreated    = "pod.created"
	PodReaped     = "pod.reaped"
)

// Event is one audit record. Empty fields are omitted.
type Event struct {
	Time        time.Time `json:"time"`
	Type        string    `json:"event"`
	Conn        string    `json:"conn,omitempty"`
	Remote      string    `json:"remote,omitempty"`
	User        string    `json:"user,omitempty"`
	Account     string    `json:"account,omitempty"`
	Method      string    `json:"method,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Kex         string    `json:"kex,omitempty"`
	Cipher      string    `json:"cipher,omitempty"`
	MAC         string    `json:"mac,omitempty"`
	HostKey     string    `json:"host_key,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	Kind        string    `json:"kind,omitempty"`
	Command     *string   `json:"command,omitempty"`
	Cluster     string    `json:"cluster,omitempty"`
	Namespace   string    `json:"namespace,omitempty"`
	Pod         string    `json:"pod,omitempty"`
	Image       string    `json:"image,omitempty"`
	Destination string    `json:"destination,omitempty"`
	ExitStatus  *int      `json:"exit_status,omitempty"`
	Signal      string    `json:"signal,omitempty"`
	BytesIn     int64     `json:"bytes_in,omitempty"`
	BytesOut    int64     `json:"bytes_out,omitempty"`
	DurationMS  int64     `json:"duration_ms,omitempty"`
	Recording   string    `json:"recording,omitempty"`
	// Tool is the tool of a user+tool login (auth.success), or the tool
	// a refused become asked for (become.deny).
	Tool string `json:"tool,omitempty"`
	// Via is "shell" for become typed in the person's shell (become,
	// become.deny, and that tool session's session.*); empty at the SSH
	// level.
	Via string `json:"via,omitempty"`
	// KeySource is the authorized_keys line (FILE:LINE, or LDAP DN and
	// position) or the trusted CA that let the user in.
	KeySource string `json:"key_source,omitempty"`
	// Restrictions are the key's or certificate's restrictions in force.
	Restrictions []string `json:"restrictions,omitempty"`
	// The certificate of a certificate login.
	CertID        string `json:"cert_id,omitempty"`
	CertSerial    uint64 `json:"cert_serial,omitempty"`
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
	// OriginalCommand is what the client asked for when a forced command
	// ran instead (session.*).
	OriginalCommand *string `json:"original_command,omitempty"`
	// Count is how many events a summary stands for (auth.failure.summary).
	Count int `json:"count,omitempty"`
}

// Log writes events. A nil *Log discards them.
type Log struct {
	mu     sync.Mutex
	w      io.Writer
	closer io.Closer
	log    *slog.Logger
	now    func() time.Time
}

// Open returns a Log for output: "stdout", "stderr", a file path
// (created 0600 and appended to), or "" (nil Log: auditing off).
func Open(output string, log *slog.Logger) (*Log, error) {
	l := &Log{log: log, now: time.Now}
	switch output {
	case "":
		return nil, nil
	case "stdout":
		l.w = os.Stdout
	case "stderr":
		l.w = os.Stderr
	default:
		f, err := os.OpenFile(output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit.output: %w", err)
		}
		l.w, l.closer = f, f
	}
	return l, nil
}

// New returns a Log writing to w (for tests and embedding).
func New(w io.Writer, log *slog.Logger) *Log { return &Log{w: w, log: log, now: time.Now} }

// Emit writes one event as one line. It never fails the caller: an
// unwritable audit log is reported on the debug log.
func (l *Log) Emit(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.now().UTC()
	}
	e.clip()
	b, err := json.Marshal(e)
	if err != nil {
		l.log.Error("audit event not encodable", "event", e.Type, "err", err)
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(b); err != nil {
		l.log.Error("audit log write failed", "event", e.Type, "err", err)
	}
}

// Close closes the file, if any.
func (l *Log) Close() error {
	if l == nil || l.closer == nil {
		return nil
	}
	return l.closer.Close()
}

// Str returns a pointer to s, for Event.Command (an empty command of a
// login shell is still recorded).
func Str(s string) *string { return &s }

// Int returns a pointer to n, for Event.ExitStatus.
func Int(n int) *int { return &n }

// Longest strings an event carries, in bytes: a command line, any other
// field. Longer ones (from clients: user names, commands, destinations)
// are cut with a marker saying how long they were.
const (
	maxCommand = 4096
	maxField   = 512
)

func (e *Event) clip() {
	for _, f := range []*string{&e.Conn, &e.Remote, &e.User, &e.Account, &e.Method, &e.Fingerprint,
		&e.Kind, &e.Cluster, &e.Namespace, &e.Pod, &e.Image, &e.Destination, &e.Signal, &e.Tool, &e.Via, &e.CertID,
		&e.CAFingerprint} {
		*f = cut(*f, maxField)
	}
	e.Reason = cut(e.Reason, maxCommand)
	e.Recording = cut(e.Recording, maxCommand)
	e.KeySource = cut(e.KeySource, maxCommand)
	if e.Command != nil && len(*e.Command) > maxCommand {
		e.Command = Str(cut(*e.Command, maxCommand))
	}
	if e.OriginalCommand != nil && len(*e.OriginalCommand) > maxCommand {
		e.OriginalCommand = Str(cut(*e.OriginalCommand, maxCommand))
	}
	for i, r := range e.Restrictions {
		e.Restrictions[i] = cut(r, maxCommand)
	}
}

// cut is internal/clip.String (audit imports no bastion package).
func cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…(cut, " + strconv.Itoa(len(s)) + " bytes)"
}

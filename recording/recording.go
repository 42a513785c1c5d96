package recording

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// queueLen bounds the chunks waiting to be written.
const queueLen = 256

// Header describes the recorded terminal.
type Header struct {
	User    string
	Conn    string
	Seq     int
	Width   int
	Height  int
	Term    string
	Shell   string
	Command string
	Start   time.Time
}

// Recorder writes one asciicast file. Its Write and Resize never block.
type Recorder struct {
	path     string
	f        *os.File
	start    time.Time
	maxBytes int64

	queue   chan event
	wg      sync.WaitGroup
	closed  atomic.Bool
	mu      sync.Mutex // guards sends against Close
	written int64      // owned by the writer goroutine
	dropped atomic.Int64
	onDrop  func(n int64)
	onError func(error)
}

type event struct {
	at   time.Time
	kind string // "o" output, "r" resize
	data string
}

// Start creates the recording file and its writer goroutine. onDrop is
// called with dropped byte counts and onError when writing fails; both
// may be nil.
func Start(dir string, maxBytes int64, h Header, onDrop func(int64), onError func(error)) (*Recorder, error) {
	userDir := filepath.Join(dir, h.User)
	if err := os.MkdirAll(userDir, 0o700); err != nil {
		return nil, fmt.Errorf("recording directory: %w", err)
	}
	name := fmt.Sprintf("%s-%s-%d.cast", h.Start.UTC().Format("20060102-150405"), h.Conn, h.Seq)
	path := filepath.Join(userDir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create recording: %w", err)
	}
	hdr := map[string]any{
		"version":   2,
		"width":     max(h.Width, 1),
		"height":    max(h.Height, 1),
		"timestamp": h.Start.Unix(),
		"title":     fmt.Sprintf("%s %s", h.User, h.Start.UTC().Format(time.RFC3339)),
		"env":       map[string]string{"TERM": h.Term, "SHELL": h.Shell},
	}
	if h.Command != "" {
		hdr["command"] = h.Command
	}
	line, _ := json.Marshal(hdr)
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write recording header: %w", err)
	}
	r := &Recorder{
		path: path, f: f, start: h.Start, maxBytes: maxBytes,
		queue: make(chan event, queueLen), written: int64(len(line) + 1),
		onDrop: onDrop, onError: onError,
	}
	r.wg.Add(1)
	go r.loop()
	return r, nil
}

// Path is the recording's file name.
func (r *Recorder) Path() string { return r.path }

// Dropped returns the bytes not recorded so far.
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// Write records terminal output. It copies p and never blocks.
func (r *Recorder) Write(p []byte) (int, error) {
	r.enqueue(event{at: time.Now(), kind: "o", data: string(p)}, len(p))
	return len(p), nil
}

// Resize records a terminal size change.
func (r *Recorder) Resize(cols, rows int) {
	r.enqueue(event{at: time.Now(), kind: "r", data: strconv.Itoa(cols) + "x" + strconv.Itoa(rows)}, 0)
}

func (r *Recorder) enqueue(e event, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return
	}
	select {
	case r.queue <- e:
	default:
		r.drop(int64(n))
	}
}

func (r *Recorder) drop(n int64) {
	if n == 0 {
		return
	}
	r.dropped.Add(n)
	if r.onDrop != nil {
		r.onDrop(n)
	}
}

func (r *Recorder) loop() {
	defer r.wg.Done()
	full := false
	failed := false
	for e := range r.queue {
		if full || failed {
			r.drop(int64(len(e.data)))
			continue
		}
		line, _ := json.Marshal([]any{roundSeconds(e.at.Sub(r.start)), e.kind, e.data})
		line = append(line, '\n')
		if r.written+int64(len(line)) > r.maxBytes {
			full = true
			r.drop(int64(len(e.data)))
			continue
		}
		if _, err := r.f.Write(line); err != nil {
			failed = true
			r.drop(int64(len(e.data)))
			if r.onError != nil {
				r.onError(fmt.Errorf("write %s: %w", r.path, err))
			}
			continue
		}
		r.written += int64(len(line))
	}
}

func roundSeconds(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1e6
}

// Close flushes what is queued and closes the file.
func (r *Recorder) Close() error {
	r.mu.Lock()
	if r.closed.Swap(true) {
		r.mu.Unlock()
		return nil
	}
	close(r.queue)
	r.mu.Unlock()
	r.wg.Wait()
	err := r.f.Close()
	if err != nil {
		return errors.Join(fmt.Errorf("close %s", r.path), err)
	}
	return nil
}

package main

import (
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce collapses a burst of file events (an editor's save, the
// atomic symlink swap of a Kubernetes Secret or ConfigMap) into one check.
const debounce = 300 * time.Millisecond

// fileWatch watches the directories holding the given files and signals
// changed when, after a burst of events settles, the content of one of
// the files differs from what it was: an event in the directory alone
// (a log file written beside the config, an editor's swap file) reloads
// nothing.
type fileWatch struct {
	w     *fsnotify.Watcher
	files func() []string
	log   *slog.Logger
	wg    sync.WaitGroup

	dirs map[string]bool
	sums map[string]string // path → content hash, or "" when unreadable
}

// watchFiles watches the directories of the files that files returns
// (called again after each change, so a reload that names other files
// is followed). Kubernetes mounts replace files by swapping a "..data"
// symlink in the directory, so the directory, not the file, is what
// must be watched; the content is read through the symlinks.
func watchFiles(ctx context.Context, files func() []string, log *slog.Logger, changed chan<- struct{}) (*fileWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	fw := &fileWatch{w: w, files: files, log: log, dirs: map[string]bool{}}
	if err := fw.watchDirs(); err != nil {
		w.Close()
		return nil, err
	}
	fw.sums = fw.snapshot()
	fw.wg.Add(1)
	go func() {
		defer fw.wg.Done()
		var timer *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) {
					continue
				}
				if timer == nil {
					timer = time.NewTimer(debounce)
				} else {
					timer.Reset(debounce)
				}
				fire = timer.C
			case <-fire:
				fire = nil
				if !fw.check() {
					continue
				}
				select {
				case changed <- struct{}{}:
				default:
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("file watch error", "err", err)
			}
		}
	}()
	return fw, nil
}

// check compares the watched files' content with the last snapshot and
// reports whether any changed.
func (fw *fileWatch) check() bool {
	now := fw.snapshot()
	if maps.Equal(now, fw.sums) {
		fw.log.Debug("file events in a watched directory, no watched file changed; not reloading")
		return false
	}
	for p, sum := range now {
		if fw.sums[p] != sum {
			fw.log.Info("watched file changed", "file", p)
		}
	}
	fw.sums = now
	if err := fw.watchDirs(); err != nil {
		fw.log.Warn("cannot watch a new file's directory; reload with SIGHUP", "err", err)
	}
	return true
}

func (fw *fileWatch) watchDirs() error {
	for _, f := range fw.files() {
		if f == "" {
			continue
		}
		d := filepath.Dir(f)
		if fw.dirs[d] {
			continue
		}
		if err := fw.w.Add(d); err != nil {
			return err
		}
		fw.dirs[d] = true
	}
	return nil
}

func (fw *fileWatch) snapshot() map[string]string {
	files := slices.DeleteFunc(slices.Clone(fw.files()), func(f string) bool { return f == "" })
	out := make(map[string]string, len(files))
	for _, f := range files {
		out[f] = hashFile(f)
	}
	return out
}

// hashFile returns the SHA-256 of path's content (through symlinks), or
// "" when it cannot be read.
func hashFile(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return string(h.Sum(nil))
}

// Close stops watching.
func (fw *fileWatch) Close() {
	fw.w.Close()
	fw.wg.Wait()
}

package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce collapses a burst of file events (an editor's save, the
// atomic symlink swap of a Kubernetes Secret or ConfigMap) into one reload.
const debounce = 300 * time.Millisecond

// fileWatch watches the directories holding the given files and signals
// changed after any event in them settles.
type fileWatch struct {
	w  *fsnotify.Watcher
	wg sync.WaitGroup
}

// watchFiles watches the directories of files and keys. Kubernetes
// mounts replace files by swapping a "..data" symlink in the directory,
// so the directory, not the file, is what must be watched.
func watchFiles(ctx context.Context, files, keys []string, log *slog.Logger, changed chan<- struct{}) (*fileWatch, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	dirs := map[string]bool{}
	for _, f := range append(append([]string{}, files...), keys...) {
		if f == "" {
			continue
		}
		d := filepath.Dir(f)
		if dirs[d] {
			continue
		}
		if err := w.Add(d); err != nil {
			w.Close()
			return nil, err
		}
		dirs[d] = true
	}
	fw := &fileWatch{w: w}
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
				log.Debug("watched file changed", "file", ev.Name, "op", ev.Op.String())
				if timer == nil {
					timer = time.NewTimer(debounce)
				} else {
					timer.Reset(debounce)
				}
				fire = timer.C
			case <-fire:
				fire = nil
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

// Close stops watching.
func (fw *fileWatch) Close() {
	fw.w.Close()
	fw.wg.Wait()
}

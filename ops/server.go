package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition: nil means healthy.
type Check struct {
	Name string
	// Probe asks the dependency; it must honour ctx.
	Probe func(ctx context.Context) error
}

// Server is the operations HTTP listener.
type Server struct {
	log      *slog.Logger
	checks   []Check
	interval time.Duration
	maxAge   time.Duration

	mu       sync.Mutex
	draining bool
	last     map[string]result

	http *http.Server
	ln   net.Listener
	wg   sync.WaitGroup
	stop context.CancelFunc
}

type result struct {
	at  time.Time // last success
	err error     // last error
}

// Listen binds the operations listener. A taken port is an error here,
// at start-up, naming the address.
func Listen(addr string, checks []Check, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ops.listen %s: %w", addr, err)
	}
	s := &Server{
		log: log, checks: checks, ln: ln,
		interval: 5 * time.Second, maxAge: 30 * time.Second,
		last: make(map[string]result),
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", s.readyz)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Start serves HTTP and runs the readiness probes until Close.
func (s *Server) Start(ctx context.Context) {
	ctx, s.stop = context.WithCancel(ctx)
	s.probeAll(ctx)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("ops listener stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(s.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.probeAll(ctx)
			}
		}
	}()
}

func (s *Server) probeAll(ctx context.Context) {
	for _, c := range s.checks {
		pctx, cancel := context.WithTimeout(ctx, s.interval)
		err := c.Probe(pctx)
		cancel()
		s.mu.Lock()
		r := s.last[c.Name]
		r.err = err
		if err == nil {
			r.at = time.Now()
		}
		s.last[c.Name] = r
		s.mu.Unlock()
	}
	s.updateGauge()
}

// SetDraining turns /readyz not-ready at once (the start of a drain).
func (s *Server) SetDraining() {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.updateGauge()
}

// problems lists why the replica is not ready; empty means ready.
func (s *Server) problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p []string
	if s.draining {
		p = append(p, "draining: the server is shutting down")
	}
	for _, c := range s.checks {
		r := s.last[c.Name]
		switch {
		case r.at.IsZero() && r.err != nil:
			p = append(p, fmt.Sprintf("%s: %v", c.Name, r.err))
		case r.at.IsZero():
			p = append(p, c.Name+": not checked yet")
		case time.Since(r.at) > s.maxAge:
			p = append(p, fmt.Sprintf("%s: no answer for %s (last error: %v)", c.Name, time.Since(r.at).Round(time.Second), r.err))
		}
	}
	return p
}

func (s *Server) updateGauge() {
	if len(s.problems()) == 0 {
		Ready.WithLabelValues().Set(1)
	} else {
		Ready.WithLabelValues().Set(0)
	}
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	p := s.problems()
	if len(p) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, line := range p {
			fmt.Fprintln(w, line)
		}
		return
	}
	fmt.Fprintln(w, "ready")
}

// Close stops the listener and the probes.
func (s *Server) Close() {
	if s.stop != nil {
		s.stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.http.Shutdown(ctx)
	s.wg.Wait()
}

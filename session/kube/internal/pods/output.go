package pods

import "sync"

// Output collects the first Max bytes an exec writes to it (stdout and
// stderr may share one); the rest is accepted and dropped, so that a
// command in the pod cannot make bastion hold more than Max for it.
type Output struct {
	Max int

	mu sync.Mutex
	b  []byte
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := o.Max - len(o.b); room > 0 {
		o.b = append(o.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return string(o.b)
}

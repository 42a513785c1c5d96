package pods

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// jitter is how much longer than its interval a periodic pass may wait,
// as a fraction of the interval: enough that N replicas started together
// drift apart instead of listing every shell pod at the same instant.
const jitter = 0.2

// Every runs fn every interval (plus up to 20% jitter, measured from the
// end of the last run) until ctx ends; the first run comes after one
// interval, not at once.
func Every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	first := time.NewTimer(wait.Jitter(interval, jitter))
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	wait.JitterUntilWithContext(ctx, fn, interval, jitter, true)
}

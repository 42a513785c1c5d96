package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Session bookkeeping across replicas.
//
// Each replica keeps, in memory, how many sessions it has open in each
// pod (tracked). It publishes that count on the pod as the annotation
// sessions.bastion.io/REPLICA = {"n":COUNT,"t":UNIX-SECONDS}: before a
// session's exec starts, when it ends, and every heartbeat interval while
// the count is not zero. Replicas patch only their own key (a JSON merge
// patch), so they never conflict. Every replica's sweep reads all the keys
// (reaper.go): a pod is in use while some replica has a fresh entry with
// n > 0; an entry not refreshed for staleAfter belongs to a replica that
// died, and its sessions are gone.
//
// The annotation written before the exec starts also guards against a
// sweep deleting a pod a session is about to use: the sweep deletes with
// the resourceVersion it decided on as a precondition, and the session's
// patch changes it.

// sessionEntry is one replica's annotation value.
type sessionEntry struct {
	N int   `json:"n"`
	T int64 `json:"t"`
}

// tracked is one pod this replica has (or just had) sessions in.
type tracked struct {
	key  string
	cl   *cluster
	ns   string
	name string

	// n and inst are guarded by Backend.mu.
	n    int
	inst *instance

	pub chan struct{} // a one-slot lock serialising publications
}

// instance is one incarnation (UID) of a pod that sessions run in, and
// the watch that notices it going away.
type instance struct {
	uid    types.UID
	gone   chan struct{}
	reason string // why it went, set before gone is closed
	stop   context.CancelFunc
}

func trackKey(cl *cluster, ns, name string) string { return cl.cfg.Name + "/" + ns + "/" + name }

// track counts one more session in the pod and returns its record.
func (b *Backend) track(cl *cluster, ns, name string) *tracked {
	key := trackKey(cl, ns, name)
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.tracked[key]
	if t == nil {
		t = &tracked{key: key, cl: cl, ns: ns, name: name, pub: make(chan struct{}, 1)}
		b.tracked[key] = t
	}
	t.n++
	return t
}

// untrack counts one session fewer, stops watching the pod when it was
// the last, and publishes the new count (best effort: the sweep copes
// with a count that was never lowered, once its heartbeat goes stale).
func (b *Backend) untrack(t *tracked) {
	b.mu.Lock()
	t.n--
	var stop context.CancelFunc
	if t.n == 0 && t.inst != nil {
		stop = t.inst.stop
		t.inst = nil
	}
	b.mu.Unlock()
	if stop != nil {
		stop()
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.APITimeout)
	defer cancel()
	if _, err := b.publish(ctx, t); err != nil {
		b.log.Debug("publish session count", "pod", t.key, "err", err)
	}
	b.mu.Lock()
	if t.n == 0 && b.tracked[t.key] == t {
		delete(b.tracked, t.key)
	}
	b.mu.Unlock()
}

// publish writes this replica's current session count to the pod and
// returns the pod as patched.
func (b *Backend) publish(ctx context.Context, t *tracked) (*corev1.Pod, error) {
	select {
	case t.pub <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-t.pub }()
	b.mu.Lock()
	n := t.n
	b.mu.Unlock()
	cl, _, err := t.cl.clients()
	if err != nil {
		return nil, err
	}
	patch, err := sessionsPatch(b.replica, n, time.Now())
	if err != nil {
		return nil, err
	}
	return cl.cs.CoreV1().Pods(t.ns).Patch(ctx, t.name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "bastion"})
}

func sessionAnnotation(replica string) string { return annoSessionsPrefix + replica }

func sessionValue(n int, now time.Time) string {
	v, _ := json.Marshal(sessionEntry{N: n, T: now.Unix()})
	return string(v)
}

func sessionsPatch(replica string, n int, now time.Time) ([]byte, error) {
	p := map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		sessionAnnotation(replica): sessionValue(n, now),
	}}}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("session patch: %w", err)
	}
	return data, nil
}

// sessionEntries reads every replica's entry on a pod. Malformed values
// are skipped.
func sessionEntries(pod *corev1.Pod) map[string]sessionEntry {
	out := map[string]sessionEntry{}
	for k, v := range pod.Annotations {
		if len(k) <= len(annoSessionsPrefix) || k[:len(annoSessionsPrefix)] != annoSessionsPrefix {
			continue
		}
		var e sessionEntry
		if err := json.Unmarshal([]byte(v), &e); err != nil {
			// An older or hand-written value: "N" alone.
			n, err := strconv.Atoi(v)
			if err != nil {
				continue
			}
			e.N = n
		}
		out[k[len(annoSessionsPrefix):]] = e
	}
	return out
}

// heartbeat refreshes the annotations of the pods this replica has
// sessions in, every interval, until ctx ends.
func (b *Backend) heartbeat(ctx context.Context) {
	tick := time.NewTicker(b.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		b.mu.Lock()
		var live []*tracked
		for _, t := range b.tracked {
			if t.n > 0 {
				live = append(live, t)
			}
		}
		b.mu.Unlock()
		for _, t := range live {
			pctx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
			if _, err := b.publish(pctx, t); err != nil {
				b.log.Warn("session heartbeat failed", "pod", t.key, "err", err)
			}
			cancel()
		}
	}
}

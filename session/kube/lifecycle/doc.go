// Package lifecycle decides when a shell pod is kept, and when it goes:
// the sessions each bastion replica has open in each pod (published on
// the pod and refreshed by a heartbeat), the watch that notices a pod
// being deleted or evicted under its sessions, whether an outdated pod is
// still in use, and the sweep that deletes pods nobody uses any more.
//
// Session counts. Each replica keeps, in memory, how many sessions it has
// open in each pod. It publishes that count on the pod as the annotation
// sessions.bastion.io/REPLICA = {"n":COUNT,"t":UNIX-SECONDS}: before a
// session's exec starts, when it ends, and every heartbeat interval while
// the count is not zero. Replicas patch only their own key (a JSON merge
// patch), so they never conflict. A pod is in use while some replica has
// a fresh entry with n > 0; an entry not refreshed for three heartbeat
// intervals belongs to a replica that died, and its sessions are gone.
//
// Reaping. Every replica's sweep deletes pods idle for the idle timeout
// (no fresh count above zero anywhere), pods whose only counts are stale,
// ended pods and pods that never became ready; it deletes with the
// resourceVersion it looked at as a precondition, so a session whose
// count was published meanwhile keeps its pod. The heartbeat and the
// sweep are jittered (pods.Every), so that replicas started together do
// not all list at the same instant.
//
// Detached work. An idle pod in which the account's detached processes
// run (tmux, screen, nohup, setsid; which processes count is in
// detached.sh and session/kube's doc.go) is kept for up to
// kube.detached_max_age after its last activity, then reaped as idle.
// The sweep scans only pods it would otherwise reap as idle: one exec of
// /bin/sh with detached.sh (builtins only: it starts no process and needs
// no helper). A scan that finds processes is recorded on the pod as
// bastion.io/detached = {"n":COUNT,"t":UNIX-SECONDS}; while that record is
// younger than five sweep intervals and newer than the last activity, no
// replica scans the pod again, so a kept pod costs one exec and one patch
// per five sweep intervals, whichever replica sweeps. Everything the
// decision needs (the last activity, the record, the processes) is in the
// cluster: a bastion that restarts or is rolled out keeps the same pods.
// A scan that fails keeps the pod until the next sweep.
// bastion_pods_kept_detached is how many the last sweep kept.
//
// The backend calls it, never the other way round. It must not import
// sshd, auth/ldap, session/kube or session/kube/shellimage.
package lifecycle

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
// The backend calls it, never the other way round. It must not import
// sshd, auth/ldap, session/kube or session/kube/shellimage.
package lifecycle

// Package pods is the kube backend's narrow client for the objects it
// works with, one per project cluster: create, get, patch, list and watch
// a pod (and wait for it to be gone), delete it (only if it is still the
// version looked at, or at once), exec in it, port-forward to it, and the
// namespace, ServiceAccount and Service look-ups around those; and the
// account's own ServiceAccount and RoleBinding (made if missing, never
// taken over when bastion did not make them). Every call
// is bounded by the API timeout (kube.api_timeout) unless it waits on
// purpose (a watch, an exec, a stream); the start-up client's from the
// moment it is sent, not while it waits in the rate limiter's queue.
//
// It also holds what every part of the backend must agree on: the labels
// and annotations bastion puts on what it makes, what a pod's state means
// (ready, finished, and the one list of container waiting reasons that
// mean a pod will not start), and how an API failure reads for the user
// (the project's cluster is unavailable).
//
// Cluster is a project's connection: its kubeconfig, reloaded when the
// file (or the CA file it names) changes, and the Client of the current
// generation.
//
// It knows nothing of accounts, images or reaping. It must not import
// sshd, auth/ldap, session/kube, session/kube/lifecycle or
// session/kube/shellimage.
package pods

// Package kubeenv sets up what the kube backend's tests need on a real
// cluster: the bastion's own identity with exactly the RBAC of
// deploy/rbac (a ServiceAccount token in a kubeconfig file), home
// directories for hostPath volumes, a switchable TCP proxy in front of the
// API server (to take "the API server" down and up without disturbing
// other tests on the shared cluster), and clean-up of everything a test's
// project made. Callers get the admin config and clientset from
// integration/kubetest. It never creates a cluster.
//
// It is for tests only: non-test code must not import it. It must not
// import other bastion packages.
package kubeenv

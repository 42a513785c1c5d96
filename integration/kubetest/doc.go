// Package kubetest gives integration tests a client-go config for the real
// single-node Kubernetes cluster that integration/cluster/up starts, and
// namespaces that delete themselves when the test ends.
//
// Config starts the cluster if it is not up (the first run builds Kubernetes,
// about ten minutes cold on 2 cores; run integration/cluster/up beforehand or
// give go test a -timeout to match) and skips the test, saying why, under
// go test -short. Set BASTION_TEST_KUBECONFIG to use a cluster that is
// already running instead.
//
// It never fakes a cluster: without -short a test gets a working cluster
// or fails with the reason.
// The cluster's images are imported, never pulled: pods that use ShellImage
// must set imagePullPolicy: Never.
//
// It is for tests only: non-test code must not import it. It must not
// import other bastion packages.
package kubetest

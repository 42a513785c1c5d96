// Package integration holds bastion's end-to-end tests: they build the
// bastion binary, start it (and real servers it talks to: slapd, a
// Kubernetes node) and drive the real OpenSSH ssh, scp and sftp clients
// and rsync against it. `go test -short` skips them; the README's test
// command runs them.
//
// Sub-packages start the real servers: integration/slapd (OpenLDAP),
// integration/cluster (scripts for a single-node Kubernetes) and
// integration/kubetest (client-go glue for that cluster).
//
// Its non-test code must not import other bastion packages: the tests
// drive the binary.
package integration

// Package ops is what an operator watches: bastion's Prometheus metrics
// (declared here, in one place, so that names and labels stay consistent
// and bounded) and the operations HTTP listener serving /metrics,
// /healthz and /readyz.
//
// Label values are always bounded: reasons, kinds, cluster and image
// names from the config, never user names or addresses.
//
// It must not import other bastion packages; they import it.
package ops

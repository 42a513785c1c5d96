// Package shellimage knows whether the shell images work: the pre-flight
// probes, which images are unavailable for new pods (the fallback state),
// the readiness check, and the inventory of the images in use.
//
// Each cluster has a list of shell images: the primary, then the
// fallbacks (kube.pod.fallback_images, the previous images). A new shell
// pod is made from the first image not known to be unavailable (Order).
// When a pod cannot start because its image cannot be pulled, the kube
// backend marks the image unavailable (MarkUnavailable) and makes the pod
// from the next image at once. An image stays marked until a pre-flight
// probe that started after the mark finds it working: then new pods use
// it again.
//
// Pre-flight. For each cluster and each of its images, a probe pod is
// made from the shell pod's spec (same image, security context,
// resources, scheduling) with a trivial command ("exit 0"), watched until
// its container has run or it cannot start, for at most
// kube.preflight.timeout, and deleted. A probe pod that is never
// scheduled is a failure when the timeout ends, with the scheduler's
// reason. The results set bastion_preflight_ok, are logged, mark the
// images that cannot be pulled as unavailable and clear the mark once an
// image works again, and feed readiness (Ready). The loop runs pre-flight
// at start (in the background: a cluster that is down must not hold up
// start-up), on Recheck (a config reload), when a session finds an image
// unavailable, and every retry interval while a cluster has a failing
// image or could not be asked.
//
// Inventory. Per cluster, every image the config names (primary and
// fallbacks) and every image a live shell pod runs, each resolved to the
// digest the pods' status reports, with the number of pods. It answers
// "which digests must the registry keep" (bastion images, ProtectList)
// and feeds bastion_shell_image_pods.
//
// The kube backend, which imports it, hands it the shell pod spec that
// probes start from. It must not import sshd, auth/ldap, session/kube or
// session/kube/lifecycle.
package shellimage

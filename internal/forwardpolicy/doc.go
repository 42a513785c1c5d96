// Package forwardpolicy answers one question: may this account forward
// (`ssh -L`, a direct-tcpip channel) to this destination, and if so, which
// address is dialled. Policy is the one type that decides; sshd consults
// it for every forward before dialling through the backend.
//
// The decision has four parts, and this is where each lives:
//
//   - The syntax of forwarding.allow ("HOST:PORTS" rules) is parsed and
//     validated by config (config/forwarding.go, config.ParseForwardRule),
//     so that check-config names the bad key.
//   - The key's own restrictions (no-port-forwarding, permitopen in
//     authorized_keys or the directory) are parsed by auth
//     (auth.Restrictions.AllowsOpen) and applied first, by Policy.Check.
//   - forwarding.allow is evaluated by Policy.Check: IPs and CIDRs, host
//     name globs, and names matched only by an IP rule are resolved here
//     and the checked address is what gets dialled.
//   - Destinations inside the backend's own platform (kube: Services and
//     pods, NAME or NAME.NAMESPACE) are not checked against
//     forwarding.allow: a backend that implements ClusterNames claims
//     them, and its Dial decides which namespaces the account may reach
//     (session/kube/forward.go, Backend.allowedIn: the account's own
//     namespace and its tools'). A refusal there is session.ErrForbidden,
//     which sshd reports through the same deny path as Check's refusals.
//
// It must not import sshd, auth, session or k8s.io/client-go.
package forwardpolicy

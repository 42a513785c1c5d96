// Package kube is the Kubernetes backend: each account's sessions run in
// one shell pod per (account, project), in the project's cluster, reached
// through the API server with client-go.
//
// Pods. The pod's name is derived from the account's exact name and the
// project ("shell-NAME-HASH", a DNS-1123 label), so every bastion replica
// finds the same pod: a session patches the pod (its replica's session
// count, package lifecycle) and creates it on NotFound; AlreadyExists means
// another session or replica won the race, and the pod is shared. The pod
// runs as the account's uid/gid (fsGroup, supplementary groups), with no
// automounted service account token, no privilege escalation, no capabilities, the
// RuntimeDefault seccomp profile and a read-only root with /tmp, /var/tmp
// and /run on an emptyDir; /etc/passwd and /etc/group carry the account's
// entry (from annotations, through the downward API: OpenSSH's sftp-server
// and scp refuse a uid without one); the home volume comes from a
// template (NFS, PVC or hostPath). Its main process is a shell loop that
// sleeps, reaps orphans and exits on SIGTERM.
//
// Credentials (credentials.go). With kube.pod.credentials: serviceaccount
// the shell's kubectl acts as the account: before creating a pod, bastion
// ensures the ServiceAccount "bastion-shell" in the account's namespace
// and a RoleBinding there (never a ClusterRoleBinding) to the operator's
// ClusterRole (kube.pod.credentials_cluster_role); the pod names that
// ServiceAccount but keeps automountServiceAccountToken false, and one
// read-only projected volume at /etc/bastion/kube holds what kubectl needs:
// the token (a serviceAccountToken projection: requested and renewed by
// the kubelet, bound to the pod, with a short lifetime), the cluster's CA
// (the kube-root-ca.crt ConfigMap every namespace has), the namespace,
// and the kubeconfig, named by KUBECONFIG. The kubeconfig is not secret
// and depends only on the project, the namespace and the API server URL,
// so it travels in a pod annotation projected by the downward API, as
// /etc/passwd does: no ConfigMap for bastion to create, update and clean
// up in every namespace (nor RBAC on ConfigMaps), and no per-session work.
// An environment-only setup cannot work: kubectl reads a token from a file
// only through a kubeconfig or the fixed in-cluster path, and writing that
// path would also hand the token to every in-cluster client library
// without saying so. The kubelet, not bastion, asks for the token, so
// bastion needs no serviceaccounts/token permission and never holds a
// user's token. All of it is in the spec hash: pods made before (or with
// other credential settings) are replaced once nobody uses them. With
// credentials: none the pod is exactly what it was before credentials
// existed (the golden files say so).
//
// Start-up. A first login costs few API requests, as a login storm
// spends them against kube.qps: with namespace.create, the namespace is
// created first (AlreadyExists when it is there), and in a namespace
// just made the ServiceAccount and RoleBinding are created without a look
// first; nothing waits for the namespace's default ServiceAccount unless
// the admission asks for it (credentials: none). ShellObjects returns
// those objects, for the login storm's raw client-go floor (bench). A
// new pod is watched (never polled) until it is ready; an interactive
// session shows a progress line meanwhile. A pod that can
// never start (image not available, config error, crash loop,
// unschedulable) or does not start within the start timeout is reported
// to the user in one line, logged with its full status, counted by reason
// (StartFailures) and deleted.
//
// Sessions. Commands run through pods/exec with the WebSocket executor
// (SPDY as fallback) and StreamWithContext; a TTY session's window
// changes reach the pod through a TerminalSizeQueue. The exit status
// comes back as a code: the exec API reports a process killed by signal N
// as 128+N, not as a signal. Because closing an exec stream does not end
// the process in the container, each session's process carries a random
// token in its environment, and when a session is cut (the SSH
// connection dropped) a second exec finds the token's processes and their
// session, and hangs them up, then kills what is left (exec.go explains
// how). The pod is watched while sessions use it: if it is deleted or
// evicted, its sessions end with a message saying so, and the next login
// makes a new pod.
//
// Detached work. A user's processes that outlive their sessions keep
// the pod past kube.idle_timeout, up to kube.detached_max_age (package
// lifecycle decides; its detached.sh scans /proc). Every process in the
// pod runs as the account, so "the user's" is decided by where a process
// sits, not by its uid. The pod's own are: PID 1 (the sleeper) and its
// session (its sleep); every process the runtime exec'd (PPID 0, its
// parent being outside the pod's PID namespace): sessions' shells,
// bastion-helper run/hangup/status/signal, kill.sh, the scan itself; and
// what still sits in the session of a live exec'd process (an open
// session, or one a dead bastion left behind), unless it ignores SIGHUP.
// Detached work is the rest: what left its session (setsid, the tmux and
// screen servers and their panes), nohup'd processes, and jobs that
// outlived their session's shell. That is what the helper's hang-up
// spares (exec.go), except that catching SIGHUP is not enough (every
// interactive shell catches it). When an interactive shell (a login
// shell or a TTY session) ends with detached work running, the user reads
// in one line (messages.go) how long it keeps the shell: one scan at each
// such logout.
//
// Reaping, session counts and the pod watch are package lifecycle's;
// shell-image health (pre-flight, fallbacks, inventory) is package
// shellimage's; every API call goes through the narrow pod client in
// internal/pods. What the user reads (the progress line, notices, why a
// shell could not start) is in messages.go.
//
// ssh -L. Names of Services and pods (NAME, NAME.NAMESPACE,
// NAME.NAMESPACE.svc[.DOMAIN]) resolve, through EndpointSlices, to a ready
// pod, reached with a port-forward through the API server; only the
// account's own namespace and, for a person, the namespaces of the tools
// they maintain are allowed, and never another account's shell pod.
// Other destinations are dialled from the bastion, under forwarding.allow
// (InCluster tells internal/forwardpolicy which is which; its doc.go says
// where each part of the forwarding decision lives).
//
// ssh -R and agent forwarding (session.Listener, relay.go). With
// kube.pod.helper_image, `bastion-helper relay` runs in the account's pod
// for each listener, listens there (the pod's loopback, or a private unix
// socket) and hands each connection to bastion through a port-forward to
// its rendezvous port; without the helper, Listen tells the user it needs
// kube.pod.helper_image.
//
// A unix socket (agent forwarding, become typed in a shell) has a path
// bastion chooses, /tmp/bastion-ssh-TOKEN/agent.sock with a random TOKEN,
// and the relay makes that directory itself, mode 0700, failing if it
// exists (so nobody can prepare it to read the connections). Listen
// thus returns once the pod is there (a cold pod is started once, by
// Listen, with its progress line; the shell's Run finds it running),
// with the address known, while the relay starts in the background: the
// listener's Ready waits for it (agent forwarding does: ssh-add does not
// retry), and a relay that cannot start closes the listener, and Accept
// and Ready return why. For an interactive shell's socket (become), the
// relay's exec even waits relayDefer, until the shell's exec is set up:
// measured on the test cluster, two execs started together slow each
// other, and the prompt came no sooner than with the relay started
// first. The become command retries a socket that is not there yet for
// 3 s, then says in one line that the service is not available.
//
// Clusters. Each project has a cluster with its own kubeconfig (reloaded
// when the file changes), namespace templates, image and pod settings; a
// user's project comes from their groups or the default. When an API
// server cannot be reached, the user reads that the project's cluster is
// unavailable, and nothing is left behind.
//
// Lifecycle: New(ctx, Config) makes the backend (no cluster is asked
// yet), Start runs its loops (heartbeat, sweep, pre-flight), Close stops
// them and waits. A one-off command (bastion images) skips Start.
//
// The package knows nothing of SSH: it implements session.Backend. It
// never deletes namespaces, and it never touches pods without its labels.
//
// It must not import sshd, session/local, auth/ldap or auth/static.
package kube

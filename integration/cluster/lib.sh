# shellcheck shell=bash disable=SC2034
# Shared by integration/cluster/up and integration/cluster/down: where things
# live and how recorded processes are found. Sourced, never run.
#
# Environment:
#   BASTION_CACHE_DIR    cache root (default: <repo>/.cache); the Kubernetes
#                        binaries go to $BASTION_CACHE_DIR/kube/<version>/bin
#   BASTION_CLUSTER_DIR  work directory: pids, logs, pki, kubeconfigs,
#                        etcd data, containerd root/state, kubelet root
#                        (default: /var/lib/bastion-test-cluster)
#   BASTION_NODE_IP      this machine's own address for the node and the
#                        API server's advertise address (default: the first
#                        global IPv4 address)

KUBE_VERSION=v1.37.2
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER_SRC=$REPO/integration/cluster
CACHE_DIR=${BASTION_CACHE_DIR:-$REPO/.cache}/kube/$KUBE_VERSION
WORK=${BASTION_CLUSTER_DIR:-/var/lib/bastion-test-cluster}
# A running cluster records where its binaries are: a checkout without that
# cache (another worktree) still finds kubectl, and never mistakes the
# healthy cluster for a dead one.
if [[ ! -x $CACHE_DIR/bin/kubectl && -r $WORK/cache-dir ]]; then
	CACHE_DIR=$(<"$WORK/cache-dir")
fi
LOCK_FILE=/run/lock/bastion-test-cluster.lock

NODE_NAME=bastion-test-node
BRIDGE=bastion0
POD_SUBNET=10.244.0.0/24
SERVICE_RANGE=10.96.0.0/12
SHELL_IMAGE=bastion.test/shell:test
PAUSE_IMAGE=bastion.test/pause:test

PKI=$WORK/pki
PIDS=$WORK/pids
LOGS=$WORK/logs
ADMIN_KUBECONFIG=$WORK/admin.kubeconfig
CONTAINERD_SOCK=$WORK/containerd/containerd.sock

# Components in start order; down stops them in reverse (containerd last,
# after its containers are gone).
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)

# TCP ports the cluster listens on, and who uses them.
declare -A PORTS=(
	[2379]=etcd [2380]="etcd (peer)" [6443]=kube-apiserver
	[10257]=kube-controller-manager [10259]=kube-scheduler
	[10250]=kubelet [10248]="kubelet (healthz)"
)

# Paths the components create whatever their flags say. up records which of
# them did not exist before it started; down removes only those.
WELL_KNOWN_PATHS=(
	/run/containerd /run/netns /var/lib/cni /var/lib/kubelet
	/var/log/containers /var/log/pods /opt/containerd /etc/cni
	/usr/libexec/kubernetes
)

# Kernel settings that the kubelet and the CNI bridge plugin change; up
# records them and down puts them back.
SYSCTLS=(
	net/ipv4/ip_forward net/ipv6/conf/all/forwarding
	vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
	kernel/keys/root_maxkeys kernel/keys/root_maxbytes
)

START_SECONDS=$SECONDS

log() { printf '[%s %3ds] %s\n' "${0##*/}" "$((SECONDS - START_SECONDS))" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

need_root() {
	[[ $EUID -eq 0 ]] || die "must run as root: it starts containerd and the kubelet and changes mounts, cgroups and iptables"
}

# take_lock serialises up and down (and concurrent test binaries calling up).
take_lock() {
	mkdir -p "${LOCK_FILE%/*}"
	exec 9>"$LOCK_FILE"
	if ! flock -n 9; then
		log "waiting for another integration/cluster/up or down to finish (lock $LOCK_FILE)"
		flock -w 1800 9 || die "timed out waiting for the lock $LOCK_FILE"
	fi
}

# pid_alive NAME: the PID recorded for NAME is running the recorded binary.
pid_alive() {
	local file=$PIDS/$1.pid pid exe actual
	[[ -f $file ]] || return 1
	read -r pid exe <"$file" || return 1
	[[ -n $pid && -d /proc/$pid ]] || return 1
	actual=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[[ ${actual% (deleted)} == "$exe" ]]
}

recorded_pid() {
	local pid _
	read -r pid _ <"$PIDS/$1.pid"
	echo "$pid"
}

kubectl_admin() {
	"$CACHE_DIR/bin/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=5s "$@"
}

ctr_k8s() {
	ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"
}

# start NAME BINARY ARGS...: run BINARY in its own session, detached from the
# caller's stdio and lock, and record "PID BINARY" in pids/NAME.pid. With the
# array START_ENV set (NAME=VALUE words), BINARY gets exactly that environment;
# with START_APPEND=1 its log is appended to instead of replaced.
start() {
	local name=$1 bin=$2
	shift 2
	local -a envcmd=()
	if [[ -v START_ENV ]]; then
		envcmd=(env -i "${START_ENV[@]}")
	fi
	log "starting $name (log: $LOGS/$name.log)"
	if [[ ${START_APPEND:-} == 1 ]]; then
		setsid "${envcmd[@]}" "$bin" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 3>&- 9>&- &
	else
		setsid "${envcmd[@]}" "$bin" "$@" </dev/null >"$LOGS/$name.log" 2>&1 3>&- 9>&- &
	fi
	echo "$! $(readlink -f "$bin")" >"$PIDS/$name.pid"
}

# restart_component NAME SIGNAL DOWN: stop recorded process NAME with
# SIGNAL (killing it if it has not exited 60 s later), leave it down for DOWN
# seconds, start it again exactly as it ran (binary, command line,
# environment and working directory, read from /proc before it stops; its
# log appended to) and wait until it is healthy and the node Ready. The
# caller holds the lock (take_lock).
restart_component() {
	local name=$1 signal=$2 down=$3 pid exe cwd deadline
	local -a argv START_ENV
	pid_alive "$name" || die "$name is not running as recorded in $PIDS/$name.pid; is the cluster up? (integration/cluster/up)"
	pid=$(recorded_pid "$name")
	read -r _ exe <"$PIDS/$name.pid"

	# What it ran with, before it goes.
	mapfile -d '' argv <"/proc/$pid/cmdline"
	mapfile -d '' START_ENV <"/proc/$pid/environ"
	cwd=$(readlink "/proc/$pid/cwd")
	# A stopped process (SIGSTOP) would never act on the signal.
	kill -CONT "$pid" 2>/dev/null || true

	log "stopping $name (PID $pid) with SIG$signal"
	kill -s "$signal" "$pid"
	deadline=$((SECONDS + 60))
	while [[ -d /proc/$pid ]]; do
		if ((SECONDS >= deadline)); then
			log "$name (PID $pid) still running 60s after SIG$signal; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			deadline=$((SECONDS + 10))
		fi
		sleep 0.1
	done
	if ((down > 0)); then
		log "$name stays down for ${down}s"
		sleep "$down"
	fi

	(cd "$cwd" && START_APPEND=1 start "$name" "$exe" "${argv[@]:1}")

	case $name in
	containerd)
		wait_for "containerd is serving" 60 containerd ctr --address "$CONTAINERD_SOCK" version
		;;
	etcd)
		wait_for "etcd is healthy" 60 etcd curl -fsS http://127.0.0.1:2379/health
		;;
	kube-apiserver)
		wait_for "kube-apiserver is ready" 120 kube-apiserver kubectl_admin get --raw /readyz
		;;
	kube-controller-manager)
		wait_for "kube-controller-manager is healthy" 60 kube-controller-manager curl -fsSk https://127.0.0.1:10257/healthz
		;;
	kube-scheduler)
		wait_for "kube-scheduler is healthy" 60 kube-scheduler curl -fsSk https://127.0.0.1:10259/healthz
		;;
	kubelet)
		wait_for "the kubelet is healthy" 60 kubelet curl -fsS http://127.0.0.1:10248/healthz
		;;
	esac
	wait_for "node $NODE_NAME is Ready" 120 "$name" kubectl_admin wait --for=condition=Ready --timeout=2s node/"$NODE_NAME"
	log "$name restarted (PID $(recorded_pid "$name"))"
}

# wait_for WHAT SECONDS NAME COMMAND...: run COMMAND until it succeeds, failing
# early when process NAME has died.
wait_for() {
	local what=$1 timeout=$2 name=$3
	shift 3
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		if [[ -n $name ]] && ! pid_alive "$name"; then
			FAILED_COMPONENT=$name
			die "$name exited while waiting for $what"
		fi
		if ((SECONDS >= deadline)); then
			FAILED_COMPONENT=$name
			die "timed out after ${timeout}s waiting for $what"
		fi
		sleep 0.2
	done
	log "$what"
}

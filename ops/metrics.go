package ops

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Registry holds every bastion metric plus the Go and process collectors.
var Registry = prometheus.NewRegistry()

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "bastion", Name: name, Help: help}, labels)
	Registry.MustRegister(c)
	return c
}

func gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "bastion", Name: name, Help: help}, labels)
	Registry.MustRegister(g)
	return g
}

func histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "bastion", Name: name, Help: help, Buckets: buckets}, labels)
	Registry.MustRegister(h)
	return h
}

var durationBuckets = []float64{1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600}

// Connections and authentication.
var (
	ConnectionsActive   = gaugeVec("connections_active", "Open SSH connections.")
	ConnectionsTotal    = counterVec("connections_total", "SSH connections accepted.")
	ConnectionsRejected = counterVec("connections_rejected_total",
		"Connections refused before authentication, by reason (max_startups: at the full mark; max_startups_random: OpenSSH's random early drop between start and full; per_source_max_startups; max_conns_per_source; penalty: the source is penalised; shutting_down).", "reason")
	AuthAttempts = counterVec("auth_attempts_total",
		"Authentication attempts by method and result (success, denied, unavailable, blocked, invalid_name, too_many).", "method", "result")
	Penalties = counterVec("penalties_total",
		"Penalties added to source addresses, by reason (auth_failure, no_auth, grace_exceeded, protocol_error).", "reason")
	PenalisedSources = gaugeVec("penalised_sources",
		"Source addresses whose new connections are refused by a penalty (active penalties).")
	AuthFailureLogsSuppressed = counterVec("auth_failure_logs_suppressed_total",
		"Failed authentication attempts not logged or audited one by one, because their source was over the per-minute burst (summarised instead).")
)

// Sessions and traffic.
var (
	SessionsActive = gaugeVec("sessions_active",
		"Open sessions by backend and kind (shell, exec, sftp, scp, rsync, become, forward).", "backend", "kind")
	SessionsRefused = counterVec("sessions_refused_total",
		"Session channels refused by limit (max_sessions_per_conn, max_sessions_per_user, max_channels_per_conn).", "reason")
	SessionDuration = histogramVec("session_duration_seconds",
		"Session duration by backend and kind.", durationBuckets, "backend", "kind")
	Bytes = counterVec("bytes_total",
		"Channel payload bytes, by direction: in (from clients) or out (to clients).", "direction")
	Forwards = counterVec("forwards_total",
		"ssh -L forwards by result (opened, denied, failed).", "result")
	SessionsCut = counterVec("sessions_cut_total",
		"Connections ended by bastion, by reason (idle_timeout, max_session_duration, keepalive, shutdown).", "reason")
)

// Directory.
var (
	LDAPRequestDuration = histogramVec("ldap_request_duration_seconds",
		"LDAP request latency by server (as configured in ldap.urls).", prometheus.DefBuckets, "server")
	LDAPErrors = counterVec("ldap_errors_total",
		"LDAP errors by server (as configured in ldap.urls).", "server")
	LDAPServerUp = gaugeVec("ldap_server_up",
		"1 while an LDAP server (as configured in ldap.urls) answers, or has not been tried yet; 0 from its failure (refused, broken, or no answer in time) until it answers an LDAP request again.", "server")
	LDAPServerHung = gaugeVec("ldap_server_hung",
		"1 while an LDAP server is down because it did not answer in time (it accepts connections and answers nothing: hung, or overloaded), 0 otherwise.", "server")
	DirectoryCache = counterVec("directory_cache_total",
		"Directory cache results: hit, miss, stale (served from cache because no server answered in time).", "result")
)

// Kubernetes backend.
var (
	PodStartDuration = histogramVec("pod_start_duration_seconds",
		"Time from creating a shell pod to Ready, by cluster: once per pod this replica created (sessions that wait for a pod another made do not count it).",
		[]float64{0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120}, "cluster")
	PodStartFailures = counterVec("pod_start_failures_total",
		"Shell pods that failed to start, by cluster and reason (ErrImagePull, ImagePullBackOff, ErrImageNeverPull, Unschedulable, timeout, ...).",
		"cluster", "reason")
	PodsCreated      = counterVec("pods_created_total", "Shell pods created by this replica, by cluster.", "cluster")
	PodsReaped       = counterVec("pods_reaped_total", "Shell pods deleted by the reaper, by cluster.", "cluster")
	PodsKeptDetached = gaugeVec("pods_kept_detached",
		"Shell pods past kube.idle_timeout that the last sweep kept because the account's detached processes (tmux, screen, nohup, setsid) run in them, by cluster.", "cluster")
	KubeAPIErrors = counterVec("kube_api_errors_total", "Kubernetes API errors by cluster.", "cluster")
	// The request's wait in the client's own rate limiter (kube.qps,
	// burst) is not in it; an exec's or port-forward's time is that of
	// its upgrade, a watch's that of its first answer.
	KubeRequestDuration = histogramVec("kube_request_duration_seconds",
		"Kubernetes API request latency, from sending a request to the answer's headers (each attempt), by cluster, method and resource (pods, pods/exec, namespaces, ...): the API server's queueing (priority and fairness) and work.",
		[]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}, "cluster", "method", "resource")
)

// Shell images: the inventory, pre-flight and fallback (session/kube).
// Their image label values come from the config and from live shell pods:
// bounded by the number of distinct images, and a series goes when its
// image does.
var (
	ShellImagePods = gaugeVec("shell_image_pods",
		"Live shell pods by cluster, image (as the config or the pod names it) and digest (from the pods' status; empty while none runs it). Every configured image (primary and fallbacks) has a series, 0 when no pod uses it.",
		"cluster", "image", "digest")
	PreflightOK = gaugeVec("preflight_ok",
		"1 when the last pre-flight probe pod of a cluster's shell image started, 0 when it did not (image missing, not schedulable, cluster unavailable).",
		"cluster", "image")
	ShellImageFallbacks = counterVec("shell_image_fallbacks_total",
		"Shell pods started from the next image because a cluster's shell image could not be pulled, by cluster and the unavailable image.",
		"cluster", "image")
)

// Operations.
var (
	Reloads = counterVec("reloads_total",
		"Reloads of config, host keys and secrets, by what and result (ok, rejected).", "what", "result")
	RecordingDropped = counterVec("recording_dropped_bytes_total",
		"Session-recording bytes dropped because the recorder fell behind or hit its cap.")
	RecordingErrors = counterVec("recording_errors_total",
		"Session recordings that could not be written (unwritable or full directory).")
	Ready = gaugeVec("ready", "1 when this replica is ready for new connections, 0 otherwise.")
)

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

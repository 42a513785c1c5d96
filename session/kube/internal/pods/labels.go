package pods

// Labels and annotations on everything bastion creates.
const (
	LabelManagedBy     = "app.kubernetes.io/managed-by"
	ManagedBy          = "bastion"
	LabelComponent     = "app.kubernetes.io/component"
	ComponentShell     = "shell"
	ComponentPreflight = "preflight"
	LabelProject       = "bastion.io/project"
	// LabelAccount is the account's short name made a valid label value
	// (for people reading kubectl output); LabelAccountHash identifies the
	// exact account name.
	LabelAccount     = "bastion.io/account"
	LabelAccountHash = "bastion.io/account-hash"

	// AnnoAccount and AnnoUID say exactly whose pod it is.
	AnnoAccount  = "bastion.io/account"
	AnnoUID      = "bastion.io/uid"
	AnnoSpecHash = "bastion.io/spec-hash"
	AnnoPasswd   = "bastion.io/passwd"
	AnnoGroup    = "bastion.io/group"
	// AnnoKubeconfig is the shell's kubeconfig (kube.pod.credentials),
	// projected into the pod through the downward API.
	AnnoKubeconfig = "bastion.io/kubeconfig"
	// AnnoClusterRole is the ClusterRole the pod's ServiceAccount was
	// bound to when the pod was made.
	AnnoClusterRole = "bastion.io/cluster-role"
	// AnnoSessionsPrefix + replica ID holds that replica's open sessions
	// in the pod and when it last said so (package lifecycle).
	AnnoSessionsPrefix = "sessions.bastion.io/"

	// ShellSelector selects every shell pod bastion made.
	ShellSelector = LabelManagedBy + "=" + ManagedBy + "," + LabelComponent + "=" + ComponentShell

	// Container is the name of the shell pod's (only) container.
	Container = "shell"
)

// ShellPodsOf selects the shell pods of one project.
func ShellPodsOf(project string) string { return ShellSelector + "," + LabelProject + "=" + project }

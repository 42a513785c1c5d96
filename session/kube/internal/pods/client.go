package pods

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/streaming/pkg/httpstream"
)

// fieldManager names bastion in the managed fields of what it writes.
const fieldManager = "bastion"

// Client is one generation of a project cluster's API client.
type Client struct {
	cluster *Cluster
	cs      kubernetes.Interface
	// start makes pods and what they need (namespace, ServiceAccount,
	// RoleBinding) and watches them start, with a rate limiter of its
	// own (kube.qps and burst, as cs's): a login storm's creations queue
	// behind one another, never in front of the requests of sessions in
	// running pods.
	start   kubernetes.Interface
	rest    *rest.Config
	timeout time.Duration // each request's (kube.api_timeout)
}

// Cluster is the cluster the client talks to.
func (c *Client) Cluster() *Cluster { return c.cluster }

// Project is the cluster's project name.
func (c *Client) Project() string { return c.cluster.Cfg.Name }

// bounded is ctx limited by the API timeout.
func (c *Client) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// queued is ctx for a request of the start-up client: its transport
// bounds each request by the API timeout once it is sent
// (requestTimeout), and the wait in its limiter's queue before that is
// bounded by ctx alone. A client without that transport (one made from a
// clientset, in tests) is bounded as bounded is.
func (c *Client) queued(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.start == c.cs {
		return c.bounded(ctx)
	}
	return ctx, func() {}
}

// Get returns pod ns/name.
func (c *Client) Get(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	return c.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
}

// Create creates pod; AlreadyExists means someone else made it first.
func (c *Client) Create(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	ctx, cancel := c.queued(ctx)
	defer cancel()
	return c.start.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{FieldManager: fieldManager})
}

// Patch applies a JSON merge patch to pod ns/name and returns the pod.
func (c *Client) Patch(ctx context.Context, ns, name string, patch []byte) (*corev1.Pod, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	return c.cs.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: fieldManager})
}

// List returns the pods of namespace ns ("": all) that selector selects.
func (c *Client) List(ctx context.Context, ns, selector string) ([]corev1.Pod, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	list, err := c.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// Deletion says which pod a delete may delete.
type Deletion int

const (
	// IfUnchanged deletes the pod only if it is still the incarnation and
	// version that was looked at (Conflict otherwise), so that a session
	// that started in between keeps it; with its grace period.
	IfUnchanged Deletion = iota
	// Now deletes the incarnation that was looked at, whatever its
	// version, with no grace period: a pod that can never serve.
	Now
)

// Delete deletes pod as how says, even when ctx has ended (it is
// clean-up). A pod already gone is no error.
func (c *Client) Delete(ctx context.Context, pod *corev1.Pod, how Deletion) error {
	ctx, cancel := c.bounded(context.WithoutCancel(ctx))
	defer cancel()
	uid, rv := pod.UID, pod.ResourceVersion
	opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}
	switch how {
	case IfUnchanged:
		opts.Preconditions.ResourceVersion = &rv
	case Now:
		zero := int64(0)
		opts.GracePeriodSeconds = &zero
	}
	err := c.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, opts)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// Watch watches pod ns/name from resourceVersion rv until fn returns true
// or an error, or ctx ends. It reconnects across watch failures (a
// RetryWatcher) and never lists.
func (c *Client) Watch(ctx context.Context, ns, name, rv string, fn func(watch.Event) (bool, error)) error {
	return c.watch(ctx, c.cs, ns, name, rv, fn)
}

// WatchStart is Watch for a pod that is starting, on the start-up client.
func (c *Client) WatchStart(ctx context.Context, ns, name, rv string, fn func(watch.Event) (bool, error)) error {
	return c.watch(ctx, c.start, ns, name, rv, fn)
}

func (c *Client) watch(ctx context.Context, cs kubernetes.Interface, ns, name, rv string, fn func(watch.Event) (bool, error)) error {
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		return cs.CoreV1().Pods(ns).Watch(ctx, o)
	}}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, rv, lw)
	if err != nil {
		return fmt.Errorf("watch pod %s/%s: %w", ns, name, err)
	}
	defer func() {
		w.Stop()
		<-w.Done()
	}()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case ev, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("watch pod %s/%s: closed", ns, name)
			}
			if ev.Type == watch.Error {
				return fmt.Errorf("watch pod %s/%s: %v", ns, name, apierrors.FromObject(ev.Object))
			}
			if ev.Type == watch.Bookmark {
				continue
			}
			done, err := fn(ev)
			if err != nil || done {
				return err
			}
		}
	}
}

// WaitGone watches until pod is deleted (or replaced by a new one of the
// same name).
func (c *Client) WaitGone(ctx context.Context, pod *corev1.Pod) error {
	return c.Watch(ctx, pod.Namespace, pod.Name, pod.ResourceVersion, func(ev watch.Event) (bool, error) {
		if ev.Type == watch.Deleted {
			return true, nil
		}
		p, ok := ev.Object.(*corev1.Pod)
		return ok && p.UID != pod.UID, nil // gone and already made anew
	})
}

// NamespaceObject is namespace ns as bastion makes it for project:
// labelled as bastion's.
func NamespaceObject(project, ns string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels(project)}}
}

// CreateNamespace creates namespace ns (NamespaceObject) unless it exists;
// created says whether this call made it. Its default ServiceAccount may
// not exist yet (WaitServiceAccount).
func (c *Client) CreateNamespace(ctx context.Context, ns string) (created bool, err error) {
	ctx, cancel := c.queued(ctx)
	defer cancel()
	_, err = c.start.CoreV1().Namespaces().Create(ctx, NamespaceObject(c.Project(), ns), metav1.CreateOptions{FieldManager: fieldManager})
	if apierrors.IsAlreadyExists(err) {
		return false, nil
	}
	if err != nil {
		return false, APIError(c.Project(), "create namespace "+ns, err)
	}
	c.cluster.log.Info("created namespace", "namespace", ns, "project", c.Project())
	return true, nil
}

// EnsureNamespace creates namespace ns unless it exists (CreateNamespace),
// and waits up to timeout for its default ServiceAccount.
func (c *Client) EnsureNamespace(ctx context.Context, ns string, timeout time.Duration) error {
	if _, err := c.CreateNamespace(ctx, ns); err != nil {
		return err
	}
	if err := c.WaitServiceAccount(ctx, ns, timeout); err != nil {
		return APIError(c.Project(), "wait for the default ServiceAccount of "+ns, err)
	}
	return nil
}

// WaitServiceAccount watches, for up to timeout, until namespace ns has
// its default ServiceAccount (pods cannot be created before).
func (c *Client) WaitServiceAccount(ctx context.Context, ns string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lw := cache.NewListWatchFromClient(c.start.CoreV1().RESTClient(), "serviceaccounts", ns, fields.OneTermEqualSelector("metadata.name", "default"))
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.ServiceAccount{}, func(store cache.Store) (bool, error) {
		_, exists, err := store.GetByKey(ns + "/default")
		return exists, err
	}, func(ev watch.Event) (bool, error) {
		return ev.Type == watch.Added || ev.Type == watch.Modified, nil
	})
	return err
}

// Service returns Service ns/name.
func (c *Client) Service(ctx context.Context, ns, name string) (*corev1.Service, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	return c.cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
}

// EndpointSlices returns the EndpointSlices of svc.
func (c *Client) EndpointSlices(ctx context.Context, svc *corev1.Service) ([]discoveryv1.EndpointSlice, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	list, err := c.cs.DiscoveryV1().EndpointSlices(svc.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name,
	})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// Ping asks the API server whether it is ready.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err
}

// Exec runs command in pod's shell container with the streams of so
// (stdin, stdout and stderr are asked for when so has them), WebSocket
// first, SPDY when the upgrade is refused. It returns when the command
// ends (a utilexec.ExitError for a non-zero status), or ctx ends.
func (c *Client) Exec(ctx context.Context, pod *corev1.Pod, command []string, so remotecommand.StreamOptions) error {
	opts := &corev1.PodExecOptions{
		Container: Container,
		Command:   command,
		Stdin:     so.Stdin != nil,
		Stdout:    so.Stdout != nil,
		Stderr:    so.Stderr != nil,
		TTY:       so.Tty,
	}
	u := c.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).
		SubResource("exec").VersionedParams(opts, scheme.ParameterCodec).URL()
	ws, err := remotecommand.NewWebSocketExecutor(c.rest, http.MethodGet, u.String())
	if err != nil {
		return fmt.Errorf("websocket executor: %w", err)
	}
	sp, err := remotecommand.NewSPDYExecutor(c.rest, http.MethodPost, u)
	if err != nil {
		return fmt.Errorf("spdy executor: %w", err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, sp, shouldFallback)
	if err != nil {
		return err
	}
	return ex.StreamWithContext(ctx, so)
}

// PortForward opens a port-forward connection to pod (the WebSocket
// tunnel, SPDY when the upgrade is refused) and on it the error and data
// streams of one forward to port.
func (c *Client) PortForward(pod *corev1.Pod, port uint16) (conn httpstream.Connection, data, errStream httpstream.Stream, err error) {
	u := c.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).
		SubResource("portforward").URL()
	d, err := c.dialer(u)
	if err != nil {
		return nil, nil, nil, err
	}
	conn, _, err = d.Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		return nil, nil, nil, err
	}
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, fmt.Sprint(port))
	h.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err = conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("create error stream: %w", err)
	}
	_ = errStream.Close() // nothing is written to it
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err = conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("create data stream: %w", err)
	}
	return conn, data, errStream, nil
}

func (c *Client) dialer(u *url.URL) (httpstream.Dialer, error) {
	tunnel, err := portforward.NewSPDYOverWebsocketDialerForStreaming(u, c.rest)
	if err != nil {
		return nil, fmt.Errorf("websocket port-forward dialer: %w", err)
	}
	rt, upgrader, err := spdy.RoundTripperFor(c.rest)
	if err != nil {
		return nil, fmt.Errorf("spdy round tripper: %w", err)
	}
	sp := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	return portforward.NewFallbackDialerForStreaming(tunnel, sp, shouldFallback), nil
}

// shouldFallback: WebSocket first, SPDY when the upgrade is refused (an
// API server or proxy without WebSocket streaming).
func shouldFallback(err error) bool {
	return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
}

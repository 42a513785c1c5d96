package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/streaming/pkg/httpstream"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/internal/forwardpolicy"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// The backend claims the names inside its clusters from the forwarding
// policy and decides them itself (allowedIn).
var _ forwardpolicy.ClusterNames = (*Backend)(nil)

// InCluster reports whether host names a Service or pod in a project's
// cluster rather than a host: NAME (in the account's own namespace),
// NAME.NAMESPACE where NAMESPACE looks like a namespace template's
// output, or NAME.NAMESPACE.svc[.CLUSTER-DOMAIN]. The forwarding policy
// (internal/forwardpolicy) leaves such destinations to Dial, which allows only the account's own namespaces;
// everything else is subject to forwarding.allow and dialled from the
// bastion.
//
// Loopback destinations (localhost, 127.0.0.0/8, ::1) are in the cluster
// too: they mean the account's own shell pod, never the bastion's own
// loopback, whatever forwarding.allow says.
func (b *Backend) InCluster(host string) bool {
	if isLoopback(host) {
		return true
	}
	_, ok := parseTarget(host, b.cfg.ClusterDomain, b.shapes)
	return ok
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Unmap().IsLoopback()
}

// Dial opens a connection for ssh -L. In-cluster names (see InCluster)
// resolve to a ready pod (a Service's endpoint, or the pod of that name)
// in a namespace the account may use, reached by a port-forward through
// the API server. Other addresses are dialled from this host: the caller
// has applied forwarding.allow to them.
func (b *Backend) Dial(ctx context.Context, r session.Request, network, address string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %q: %w", address, err)
	}
	if isLoopback(host) {
		return b.dialOwnPod(ctx, r, portStr)
	}
	tg, inCluster := parseTarget(host, b.cfg.ClusterDomain, b.shapes)
	if !inCluster {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return nil, fmt.Errorf("dial %s %s: %w", network, address, err)
		}
		return c, nil
	}
	port, cl, id, c, err := b.forwardTarget(r, portStr)
	if err != nil {
		return nil, err
	}
	ns := tg.namespace
	if ns == "" {
		ns = namespaceFor(cl.Cfg, id)
	}
	accounts, ok := b.allowedIn(cl, r, ns)
	if !ok {
		return nil, session.UserErrorf(fmt.Errorf("namespace %s is not %s's: %w", ns, r.Account.Name, session.ErrForbidden),
			fmt.Sprintf("forwarding into namespace %s is not allowed: only your own (and your tools') namespaces in %s", ns, cl.Name()))
	}
	pod, podPort, err := resolveTarget(ctx, c, tg.name, ns, port)
	if err != nil {
		return nil, err
	}
	if pod.Labels[pods.LabelManagedBy] == pods.ManagedBy && pod.Labels[pods.LabelComponent] == pods.ComponentShell && !accounts[pod.Annotations[pods.AnnoAccount]] {
		return nil, session.UserErrorf(fmt.Errorf("pod %s/%s is the shell of %q: %w", ns, pod.Name, pod.Annotations[pods.AnnoAccount], session.ErrForbidden),
			fmt.Sprintf("%s.%s is another account's shell; forwarding to it is not allowed", tg.name, ns))
	}
	return b.forward(ctx, c, pod, podPort)
}

// dialOwnPod forwards to port on the loopback of r's account's own shell
// pod (ssh -L N:localhost:N to a dev server or notebook in the shell). It
// never starts a pod: with no shell running, nothing of the user's listens.
func (b *Backend) dialOwnPod(ctx context.Context, r session.Request, portStr string) (net.Conn, error) {
	port, cl, id, c, err := b.forwardTarget(r, portStr)
	if err != nil {
		return nil, err
	}
	ns := namespaceFor(cl.Cfg, id)
	name := podName(cl.Name(), id.acct.Name)
	pod, err := c.Get(ctx, ns, name)
	switch {
	case apierrors.IsNotFound(err):
		return nil, session.UserErrorf(err, fmt.Sprintf("localhost is your shell in %s, and it is not running: log in, start what should listen on port %d, then forward", cl.Name(), port))
	case err != nil:
		return nil, pods.APIError(c.Project(), "get pod "+ns+"/"+name, err)
	}
	if err := checkOwner(pod, id); err != nil {
		return nil, err
	}
	if !pods.Ready(pod) {
		return nil, session.UserErrorf(nil, fmt.Sprintf("your shell in %s is not ready yet; try again in a moment", cl.Name()))
	}
	return b.forward(ctx, c, pod, port)
}

// forwardTarget parses a forward's port and finds r's cluster, identity
// and pod client: what every in-cluster forward starts with.
func (b *Backend) forwardTarget(r session.Request, portStr string) (uint16, *pods.Cluster, identity, *pods.Client, error) {
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return 0, nil, identity{}, nil, session.UserErrorf(err, fmt.Sprintf("bad port %q", portStr))
	}
	cl, id, err := b.resolve(r)
	if err != nil {
		return 0, nil, identity{}, nil, err
	}
	c, err := cl.Client()
	if err != nil {
		return 0, nil, identity{}, nil, err
	}
	return uint16(port), cl, id, c, nil
}

// allowedIn reports whether r's account may forward into namespace ns,
// and whose shell pods it may reach there: the account's own namespace,
// and for a person the namespaces of the tools they maintain.
func (b *Backend) allowedIn(cl *pods.Cluster, r session.Request, ns string) (map[string]bool, bool) {
	id := who(r.User, r.Account, b.cfg.ToolPrefix, cl.Name())
	accounts := map[string]bool{}
	ok := false
	if namespaceFor(cl.Cfg, id) == ns {
		accounts[r.Account.Name] = true
		ok = true
	}
	if !id.isTool && r.User != nil {
		for _, t := range r.User.Tools {
			if auth.ValidName(t) != nil {
				continue
			}
			if expandNamespace(cl.Cfg.ToolNamespace(), cl.Name(), t) == ns {
				accounts[b.cfg.ToolPrefix+t] = true
				ok = true
			}
		}
	}
	return accounts, ok
}

// resolveTarget finds a ready pod for name in ns: a Service's ready
// endpoint (port is the Service port, mapped to the endpoint's port), or
// else the pod called name (port is the pod's port).
func resolveTarget(ctx context.Context, c *pods.Client, name, ns string, port uint16) (*corev1.Pod, uint16, error) {
	svc, err := c.Service(ctx, ns, name)
	switch {
	case err == nil:
		return serviceEndpoint(ctx, c, svc, port)
	case !apierrors.IsNotFound(err):
		return nil, 0, pods.APIError(c.Project(), "get service "+ns+"/"+name, err)
	}
	pod, err := c.Get(ctx, ns, name)
	if apierrors.IsNotFound(err) {
		return nil, 0, session.UserErrorf(err, fmt.Sprintf("there is no Service or pod %s in namespace %s", name, ns))
	}
	if err != nil {
		return nil, 0, pods.APIError(c.Project(), "get pod "+ns+"/"+name, err)
	}
	if !pods.Ready(pod) {
		return nil, 0, session.UserErrorf(nil, fmt.Sprintf("pod %s in namespace %s is not ready", name, ns))
	}
	return pod, port, nil
}

func serviceEndpoint(ctx context.Context, c *pods.Client, svc *corev1.Service, port uint16) (*corev1.Pod, uint16, error) {
	where := svc.Name + "." + svc.Namespace
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.Port == int32(port) && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
			sp = p
			break
		}
	}
	if sp == nil {
		return nil, 0, session.UserErrorf(nil, fmt.Sprintf("service %s has no TCP port %d", where, port))
	}
	slices, err := c.EndpointSlices(ctx, svc)
	if err != nil {
		return nil, 0, pods.APIError(c.Project(), "list endpointslices of "+where, err)
	}
	type candidate struct {
		pod  string
		port uint16
	}
	var cands []candidate
	for _, s := range slices {
		target := uint16(0)
		for _, p := range s.Ports {
			if p.Port != nil && (p.Name == nil && sp.Name == "" || p.Name != nil && *p.Name == sp.Name) &&
				(p.Protocol == nil || *p.Protocol == corev1.ProtocolTCP) {
				target = uint16(*p.Port)
			}
		}
		if target == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			if ready && e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				cands = append(cands, candidate{e.TargetRef.Name, target})
			}
		}
	}
	if len(cands) == 0 {
		return nil, 0, session.UserErrorf(nil, fmt.Sprintf("service %s has no ready pod", where))
	}
	pick := cands[rand.IntN(len(cands))]
	pod, err := c.Get(ctx, svc.Namespace, pick.pod)
	if err != nil {
		return nil, 0, pods.APIError(c.Project(), "get pod "+svc.Namespace+"/"+pick.pod, err)
	}
	return pod, pick.port, nil
}

// forward opens a port-forward stream pair to pod:port; the connection
// lives until it is closed, whatever happens to ctx afterwards.
func (b *Backend) forward(ctx context.Context, c *pods.Client, pod *corev1.Pod, port uint16) (net.Conn, error) {
	type result struct {
		c   *forwardConn
		err error
	}
	ch := make(chan result) // unbuffered: a late result is closed, not lost
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fc, err := b.openForward(c, pod, port)
		if err != nil && ctx.Err() == nil {
			// A tunnel that closed as it opened: once more, on a new one.
			b.log.Debug("port-forward failed; retrying once", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			fc, err = b.openForward(c, pod, port)
		}
		select {
		case ch <- result{fc, err}:
		case <-ctx.Done():
			if fc != nil {
				fc.Close()
			}
		}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, pods.UserError(c.Project(), fmt.Sprintf("port-forward to %s/%s:%d", pod.Namespace, pod.Name, port), res.err)
		}
		return res.c, nil
	case <-ctx.Done():
		return nil, pods.UnavailableError(c.Project(), fmt.Errorf("port-forward to %s/%s:%d: %w", pod.Namespace, pod.Name, port, context.Cause(ctx)))
	}
}

func (b *Backend) openForward(c *pods.Client, pod *corev1.Pod, port uint16) (*forwardConn, error) {
	conn, data, errStream, err := c.PortForward(pod, port)
	if err != nil {
		return nil, err
	}
	fc := &forwardConn{conn: conn, data: data, errDone: make(chan struct{}), wg: &b.wg,
		addr: podAddr(fmt.Sprintf("%s/%s:%d", pod.Namespace, pod.Name, port))}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(fc.errDone)
		msg, _ := io.ReadAll(io.LimitReader(errStream, 4096))
		if len(msg) > 0 {
			fc.remoteErr = fmt.Errorf("port-forward to %s: %s", fc.addr, strings.TrimSpace(string(msg)))
			b.log.Info("forward failed in the pod", "target", string(fc.addr), "err", fc.remoteErr)
			_ = data.Reset()
		}
	}()
	return fc, nil
}

// forwardConn is one forwarded TCP connection: a data stream of a
// port-forward connection of its own. Deadlines are not supported.
type forwardConn struct {
	conn      httpstream.Connection
	data      httpstream.Stream
	errDone   chan struct{}
	remoteErr error // set before errDone is closed
	addr      podAddr
	wg        *sync.WaitGroup // the backend's: owns Close's teardown
	closeOnce sync.Once
}

func (c *forwardConn) Read(p []byte) (int, error) {
	n, err := c.data.Read(p)
	if err != nil && isClosed(c.errDone, 200*time.Millisecond) && c.remoteErr != nil {
		return n, c.remoteErr
	}
	return n, err
}

func (c *forwardConn) Write(p []byte) (int, error) { return c.data.Write(p) }

// CloseWrite half-closes: the pod's side reads EOF.
func (c *forwardConn) CloseWrite() error { return c.data.Close() }

// Close ends the connection as closing a TCP socket does: what was
// written still reaches the pod. It half-closes the data stream at once
// and tears the port-forward connection down once the pod's side has
// ended too (its error stream ends) or after closeLinger. Resetting at
// once dropped the last bytes written on their way through the API
// server and the kubelet: an ssh -R reply written just before its
// connection was closed never reached the process in the pod.
func (c *forwardConn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.data.Close()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			t := time.NewTimer(closeLinger)
			defer t.Stop()
			select {
			case <-c.errDone:
			case <-t.C:
			}
			_ = c.data.Reset()
			_ = c.conn.Close()
		}()
	})
	return nil
}

// closeLinger bounds how long a closed forwarded connection waits for the
// pod's side to take the last bytes and end.
const closeLinger = 5 * time.Second

func (c *forwardConn) LocalAddr() net.Addr  { return c.addr }
func (c *forwardConn) RemoteAddr() net.Addr { return c.addr }

var errNoDeadlines = errors.New("port-forward connections have no deadlines")

func (c *forwardConn) SetDeadline(time.Time) error      { return errNoDeadlines }
func (c *forwardConn) SetReadDeadline(time.Time) error  { return errNoDeadlines }
func (c *forwardConn) SetWriteDeadline(time.Time) error { return errNoDeadlines }

// podAddr is "namespace/pod:port".
type podAddr string

func (a podAddr) Network() string { return "kube-port-forward" }
func (a podAddr) String() string  { return string(a) }

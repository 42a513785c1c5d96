package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/tools/portforward"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session"
)

// InCluster reports whether host names a Service or pod in a project's
// cluster rather than a host: NAME (in the account's own namespace),
// NAME.NAMESPACE where NAMESPACE looks like a namespace template's
// output, or NAME.NAMESPACE.svc[.CLUSTER-DOMAIN]. sshd leaves such
// destinations to Dial, which allows only the account's own namespaces;
// everything else is subject to forwarding.allow and dialled from the
// bastion.
func (b *Backend) InCluster(host string) bool {
	_, ok := parseTarget(host, b.cfg.ClusterDomain, b.shapes)
	return ok
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
	tg, inCluster := parseTarget(host, b.cfg.ClusterDomain, b.shapes)
	if !inCluster {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return nil, fmt.Errorf("dial %s %s: %w", network, address, err)
		}
		return c, nil
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, session.UserErrorf(err, fmt.Sprintf("bad port %q", portStr))
	}
	cl, id, err := b.resolve(r)
	if err != nil {
		return nil, err
	}
	cs, err := b.clientsFor(cl)
	if err != nil {
		return nil, err
	}
	ns := tg.namespace
	if ns == "" {
		ns = namespaceFor(cl.cfg, id)
	}
	accounts, ok := b.allowedIn(cl, r, ns)
	if !ok {
		return nil, session.UserErrorf(fmt.Errorf("namespace %s is not %s's: %w", ns, r.Account.Name, session.ErrForbidden),
			fmt.Sprintf("forwarding into namespace %s is not allowed: only your own (and your tools') namespaces in %s", ns, cl.cfg.Name))
	}
	pod, podPort, err := b.resolveTarget(ctx, cl, cs, tg.name, ns, uint16(port))
	if err != nil {
		return nil, err
	}
	if pod.Labels[labelManagedBy] == managedBy && pod.Labels[labelComponent] == componentShell && !accounts[pod.Annotations[annoAccount]] {
		return nil, session.UserErrorf(fmt.Errorf("pod %s/%s is the shell of %q: %w", ns, pod.Name, pod.Annotations[annoAccount], session.ErrForbidden),
			fmt.Sprintf("%s.%s is another account's shell; forwarding to it is not allowed", tg.name, ns))
	}
	return b.forward(ctx, cl, cs, pod, podPort)
}

// allowedIn reports whether r's account may forward into namespace ns,
// and whose shell pods it may reach there: the account's own namespace,
// and for a person the namespaces of the tools they maintain.
func (b *Backend) allowedIn(cl *cluster, r session.Request, ns string) (map[string]bool, bool) {
	id := who(r.User, r.Account, b.cfg.ToolPrefix, cl.cfg.Name)
	accounts := map[string]bool{}
	ok := false
	if namespaceFor(cl.cfg, id) == ns {
		accounts[r.Account.Name] = true
		ok = true
	}
	if !id.isTool && r.User != nil {
		for _, t := range r.User.Tools {
			if auth.ValidName(t) != nil {
				continue
			}
			if expandNamespace(cl.cfg.ToolNamespace(), cl.cfg.Name, t) == ns {
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
func (b *Backend) resolveTarget(ctx context.Context, cl *cluster, cs *clients, name, ns string, port uint16) (*corev1.Pod, uint16, error) {
	actx, cancel := context.WithTimeout(ctx, b.cfg.APITimeout)
	defer cancel()
	svc, err := cs.cs.CoreV1().Services(ns).Get(actx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		return b.serviceEndpoint(actx, cl, cs, svc, port)
	case !apierrors.IsNotFound(err):
		return nil, 0, apiError(cl, "get service "+ns+"/"+name, err)
	}
	pod, err := cs.cs.CoreV1().Pods(ns).Get(actx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, 0, session.UserErrorf(err, fmt.Sprintf("there is no Service or pod %s in namespace %s", name, ns))
	}
	if err != nil {
		return nil, 0, apiError(cl, "get pod "+ns+"/"+name, err)
	}
	if !podReady(pod) {
		return nil, 0, session.UserErrorf(nil, fmt.Sprintf("pod %s in namespace %s is not ready", name, ns))
	}
	return pod, port, nil
}

func (b *Backend) serviceEndpoint(ctx context.Context, cl *cluster, cs *clients, svc *corev1.Service, port uint16) (*corev1.Pod, uint16, error) {
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
	slices, err := cs.cs.DiscoveryV1().EndpointSlices(svc.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name,
	})
	if err != nil {
		return nil, 0, apiError(cl, "list endpointslices of "+where, err)
	}
	type candidate struct {
		pod  string
		port uint16
	}
	var cands []candidate
	for _, s := range slices.Items {
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
	c := cands[rand.IntN(len(cands))]
	pod, err := cs.cs.CoreV1().Pods(svc.Namespace).Get(ctx, c.pod, metav1.GetOptions{})
	if err != nil {
		return nil, 0, apiError(cl, "get pod "+svc.Namespace+"/"+c.pod, err)
	}
	return pod, c.port, nil
}

// forward opens a port-forward stream pair to pod:port; the connection
// lives until it is closed, whatever happens to ctx afterwards.
func (b *Backend) forward(ctx context.Context, cl *cluster, cs *clients, pod *corev1.Pod, port uint16) (net.Conn, error) {
	type result struct {
		c   *forwardConn
		err error
	}
	ch := make(chan result) // unbuffered: a late result is closed, not lost
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		c, err := b.openForward(cs, pod, port)
		if err != nil && ctx.Err() == nil {
			// A tunnel that closed as it opened: once more, on a new one.
			b.log.Debug("port-forward failed; retrying once", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			c, err = b.openForward(cs, pod, port)
		}
		select {
		case ch <- result{c, err}:
		case <-ctx.Done():
			if c != nil {
				c.Close()
			}
		}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, asUserError(cl, fmt.Sprintf("port-forward to %s/%s:%d", pod.Namespace, pod.Name, port), res.err)
		}
		return res.c, nil
	case <-ctx.Done():
		return nil, unavailableError(cl, fmt.Errorf("port-forward to %s/%s:%d: %w", pod.Namespace, pod.Name, port, context.Cause(ctx)))
	}
}

func (b *Backend) openForward(cs *clients, pod *corev1.Pod, port uint16) (*forwardConn, error) {
	url := cs.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).
		SubResource("portforward").URL().String()
	d, err := cs.dialer(url)
	if err != nil {
		return nil, err
	}
	conn, _, err := d.Dial(portforward.PortForwardProtocolV1Name)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(int(port)))
	h.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("create error stream: %w", err)
	}
	_ = errStream.Close() // nothing is written to it
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("create data stream: %w", err)
	}
	fc := &forwardConn{conn: conn, data: data, errDone: make(chan struct{}),
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

func (c *forwardConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		_ = c.data.Reset()
		err = c.conn.Close()
	})
	return err
}

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

package kubeenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Identity is the bastion's identity for one test.
type Identity struct {
	// Kubeconfig is the file to give the backend.
	Kubeconfig string
	// Proxy, if the identity was made WithProxy, is in front of the API
	// server in Kubeconfig.
	Proxy *Proxy

	admin  *rest.Config
	client kubernetes.Interface
	ns     string
}

// Option changes what Bastion makes.
type Option func(*options)

type options struct {
	proxy      bool
	namespaces bool
	flowSchema bool
}

// WithProxy puts a Proxy between the kubeconfig and the API server.
func WithProxy() Option { return func(o *options) { o.proxy = true } }

// WithNamespaces also binds deploy/rbac/namespaces.yaml.
func WithNamespaces() Option { return func(o *options) { o.namespaces = true } }

// WithFlowSchema also makes deploy/rbac/flowschema.yaml's FlowSchema for
// the ServiceAccount (named per test, deleted at the end).
func WithFlowSchema() Option { return func(o *options) { o.flowSchema = true } }

// Bastion makes a ServiceAccount in namespace ns bound to fresh copies of
// the ClusterRoles in deploy/rbac (named per test, deleted at the end),
// and writes a kubeconfig with a token for it.
func Bastion(t testing.TB, admin *rest.Config, client kubernetes.Interface, ns string, opts ...Option) *Identity {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
	defer cancel()
	files := []string{"bastion.yaml"}
	if o.namespaces {
		files = append(files, "namespaces.yaml")
	}
	suffix := "-" + ns
	_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "bastion"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create ServiceAccount: %v", err)
	}
	for _, f := range files {
		for _, role := range clusterRoles(t, f) {
			role.Name += suffix
			role.ResourceVersion = ""
			if _, err := client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create ClusterRole %s: %v", role.Name, err)
			}
			binding := &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: role.Name},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
				Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "bastion", Namespace: ns}},
			}
			if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create ClusterRoleBinding %s: %v", binding.Name, err)
			}
			name := role.Name
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
				defer cancel()
				_ = client.RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{})
				_ = client.RbacV1().ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{})
			})
		}
	}
	if o.flowSchema {
		fs := flowSchema(t)
		fs.Name += suffix
		for i := range fs.Spec.Rules {
			for j := range fs.Spec.Rules[i].Subjects {
				if sa := fs.Spec.Rules[i].Subjects[j].ServiceAccount; sa != nil && sa.Name == "bastion" {
					sa.Namespace = ns
				}
			}
		}
		if _, err := client.FlowcontrolV1().FlowSchemas().Create(ctx, fs, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create FlowSchema %s: %v", fs.Name, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
			defer cancel()
			_ = client.FlowcontrolV1().FlowSchemas().Delete(ctx, fs.Name, metav1.DeleteOptions{})
		})
	}
	id := &Identity{admin: admin, client: client, ns: ns}
	server := admin.Host
	if o.proxy {
		u, err := url.Parse(admin.Host)
		if err != nil {
			t.Fatal(err)
		}
		id.Proxy = NewProxy(t, u.Host)
		u.Host = id.Proxy.Addr
		server = u.String()
	}
	id.Kubeconfig = filepath.Join(t.TempDir(), "bastion.kubeconfig")
	id.WriteKubeconfig(t, server)
	return id
}

// WriteKubeconfig (re)writes the kubeconfig with a new token for server.
func (id *Identity) WriteKubeconfig(t testing.TB, server string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
	defer cancel()
	exp := int64(3600)
	tok, err := id.client.CoreV1().ServiceAccounts(id.ns).CreateToken(ctx, "bastion", &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for the bastion ServiceAccount: %v", err)
	}
	ca := id.admin.TLSClientConfig.CAData
	if len(ca) == 0 && id.admin.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(id.admin.TLSClientConfig.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["bastion"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "bastion"}
	cfg.CurrentContext = "test"
	tmp := id.Kubeconfig + ".tmp"
	if err := clientcmd.WriteToFile(*cfg, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, id.Kubeconfig); err != nil {
		t.Fatal(err)
	}
}

// Server is the admin's API server URL.
func (id *Identity) Server() string { return id.admin.Host }

// flowSchema is deploy/rbac/flowschema.yaml's FlowSchema.
func flowSchema(t testing.TB) *flowcontrolv1.FlowSchema {
	t.Helper()
	var fs flowcontrolv1.FlowSchema
	if err := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(rbacFile(t, "flowschema.yaml")), 4096).Decode(&fs); err != nil || fs.Kind != "FlowSchema" {
		t.Fatalf("deploy/rbac/flowschema.yaml: no FlowSchema (%v)", err)
	}
	return &fs
}

func clusterRoles(t testing.TB, file string) []*rbacv1.ClusterRole {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(rbacFile(t, file)), 4096)
	var roles []*rbacv1.ClusterRole
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("deploy/rbac/%s: %v", file, err)
		}
		if u.GetKind() != "ClusterRole" {
			continue
		}
		var role rbacv1.ClusterRole
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &role); err != nil {
			t.Fatalf("deploy/rbac/%s: %v", file, err)
		}
		roles = append(roles, &role)
	}
	if len(roles) == 0 {
		t.Fatalf("deploy/rbac/%s has no ClusterRole", file)
	}
	return roles
}

// rbacFile is the content of deploy/rbac/name.
func rbacFile(t testing.TB, name string) []byte {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "rbac", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "deploy", "rbac")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no deploy/rbac above the working directory")
		}
		dir = parent
	}
}

// Home makes a home directory owned by uid:gid for a hostPath volume (the
// cluster's node is this machine), removed at the end of the test.
func Home(t testing.TB, uid, gid int) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(home, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, uid, gid); err != nil {
		t.Fatalf("chown %s: %v (the cluster tests run as root)", home, err)
	}
	return home
}

// Cleanup deletes, at the end of the test, every namespace and shell pod
// labelled with project (bastion.io/project), and waits until the pods
// are gone.
func Cleanup(t testing.TB, client kubernetes.Interface, project string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 2*time.Minute)
		defer cancel()
		sel := metav1.ListOptions{LabelSelector: "bastion.io/project=" + project}
		zero := int64(0)
		pods, err := client.CoreV1().Pods("").List(ctx, sel)
		if err == nil {
			for _, p := range pods.Items {
				_ = client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			}
		}
		nss, err := client.CoreV1().Namespaces().List(ctx, sel)
		if err == nil {
			for _, ns := range nss.Items {
				_ = client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
			}
		}
		if err := WaitNoPods(ctx, client, sel.LabelSelector); err != nil {
			t.Errorf("clean-up of project %s: %v", project, err)
		}
	})
}

// WaitNoPods watches until no pod matches selector.
func WaitNoPods(ctx context.Context, client kubernetes.Interface, selector string) error {
	for {
		list, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		if len(list.Items) == 0 {
			return nil
		}
		w, err := client.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: list.ResourceVersion})
		if err != nil {
			return err
		}
		left := map[string]bool{}
		for _, p := range list.Items {
			left[p.Namespace+"/"+p.Name] = true
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Deleted {
				if p, ok := ev.Object.(*corev1.Pod); ok {
					delete(left, p.Namespace+"/"+p.Name)
				}
			}
			if len(left) == 0 {
				break
			}
		}
		w.Stop()
		if len(left) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("pods still there: %v", strings.Join(keys(left), " "))
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Proxy is a TCP proxy that can be taken down (listener closed, every
// connection cut: the API server is "stopped") and brought up again on
// the same address.
type Proxy struct {
	Addr   string
	target string
	mu     sync.Mutex
	l      net.Listener
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

// NewProxy forwards 127.0.0.1:PORT to target until the test ends.
func NewProxy(t testing.TB, target string) *Proxy { return newProxy(t, "127.0.0.1:0", target) }

func newProxy(t testing.TB, listen, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	p.serve(l)
	t.Cleanup(func() { p.Down(); p.wg.Wait() })
	return p
}

// Down closes the listener and cuts every connection.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// Up listens again on the same address.
func (p *Proxy) Up(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	up := p.l != nil
	p.mu.Unlock()
	if up {
		return
	}
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if l, err = net.Listen("tcp", p.Addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("proxy up again on %s: %v", p.Addr, err)
	}
	p.serve(l)
}

func (p *Proxy) serve(l net.Listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.l != l {
				p.mu.Unlock()
				c.Close()
				up.Close()
				continue
			}
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer p.wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
				p.mu.Lock()
				delete(p.conns, dst)
				delete(p.conns, src)
				p.mu.Unlock()
			}
			go pipe(c, up)
			go pipe(up, c)
		}
	}()
}

package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session/kube/internal/pods"
)

// Two replicas race to create the same account's pod: this one's create
// answers AlreadyExists because the other made it first. The session must
// share the other's pod (not fail, not make a second one), with its own
// count published on it beside the other replica's.
func TestAcquireSharesAPodCreatedMeanwhile(t *testing.T) {
	t.Parallel()
	b, cl := testBackend(t, "r/shell@sha256:01")
	t.Cleanup(b.Close)
	cs := fake.NewClientset()
	cl.UseClient(cs)
	podsGVR := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	creates := 0
	var theirs *corev1.Pod
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		creates++
		mine := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		// The other replica's pod: the same spec, its own count, ready.
		theirs = mine.DeepCopy()
		theirs.UID, theirs.ResourceVersion = "their-pod", "7"
		for k := range theirs.Annotations {
			if strings.HasPrefix(k, pods.AnnoSessionsPrefix) {
				delete(theirs.Annotations, k)
			}
		}
		theirs.Annotations[pods.AnnoSessionsPrefix+"other-replica"] = `{"n":1,"t":1}`
		theirs.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		if err := cs.Tracker().Add(theirs); err != nil {
			t.Fatal(err)
		}
		return true, nil, apierrors.NewAlreadyExists(schema.GroupResource{Resource: "pods"}, mine.Name)
	})

	c, err := cl.Current()
	if err != nil {
		t.Fatal(err)
	}
	id := identity{acct: auth.Account{Name: "alice", UID: 5001, GID: 5001}, short: "alice", project: "tools"}
	pod, u, inst, err := b.acquire(t.Context(), c, id, "user-alice", nil, nil)
	if err != nil {
		t.Fatalf("acquire after AlreadyExists: %v", err)
	}
	defer b.pods.Untrack(u)
	if creates != 1 || pod.UID != "their-pod" || inst == nil {
		t.Fatalf("creates %d, pod %s: want the other replica's pod shared", creates, pod.UID)
	}
	got, err := cs.Tracker().Get(podsGVR, "user-alice", pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	a := got.(*corev1.Pod).Annotations
	if a[pods.AnnoSessionsPrefix+"other-replica"] == "" || !strings.HasPrefix(a[pods.AnnoSessionsPrefix+b.replica], `{"n":1,`) {
		t.Errorf("session annotations %v: want both replicas' counts", a)
	}
}

// A cold login (no namespace, no pod) makes the namespace, the
// ServiceAccount, the RoleBinding and the pod with one request each: no
// looking before creating in the namespace it made, no waiting for the
// default ServiceAccount (the pod names bastion's own). What it makes is
// ShellObjects.
func TestAcquireColdRequests(t *testing.T) {
	t.Parallel()
	b, _ := testBackend(t, "r/shell@sha256:01")
	t.Cleanup(b.Close)
	yes := true
	b.cfg.Clusters[0].Namespace.Create = &yes
	cl := pods.NewCluster(&b.cfg, b.cfg.Clusters[0], b.log)
	b.clusters["tools"] = cl
	cs := fake.NewClientset()
	cl.UseClient(cs)
	namespaces := map[string]bool{}
	cs.PrependReactor("create", "namespaces", func(a k8stesting.Action) (bool, runtime.Object, error) {
		namespaces[a.(k8stesting.CreateAction).GetObject().(*corev1.Namespace).Name] = true
		return false, nil, nil
	})
	for _, res := range []string{"serviceaccounts", "rolebindings", "pods"} {
		cs.PrependReactor("create", res, func(a k8stesting.Action) (bool, runtime.Object, error) {
			if !namespaces[a.GetNamespace()] {
				return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, a.GetNamespace())
			}
			if p, ok := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod); ok {
				// The kubelet, at once.
				p.UID, p.ResourceVersion = "new-pod", "1"
				p.Status = corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
			}
			return false, nil, nil
		})
	}

	c, err := cl.Current()
	if err != nil {
		t.Fatal(err)
	}
	acct := auth.Account{Name: "alice", UID: 5001, GID: 5001, Home: "/home/alice"}
	user := &auth.User{Account: acct}
	id := who(user, acct, b.cfg.ToolPrefix, "tools")
	want, err := b.ShellObjects(user, acct)
	if err != nil {
		t.Fatal(err)
	}
	pod, u, _, err := b.acquire(t.Context(), c, id, want.Pod.Namespace, nil, nil)
	if err != nil {
		t.Fatalf("cold acquire: %v", err)
	}
	defer b.pods.Untrack(u)
	var got []string
	for _, a := range cs.Actions() {
		if a.GetVerb() != "watch" { // the pod's, from now on
			got = append(got, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	// The pod's patch (is there one?), then one request per object.
	wantReq := "patch pods,create namespaces,create serviceaccounts,create rolebindings,create pods"
	if strings.Join(got, ",") != wantReq {
		t.Errorf("requests\n%s\nwant\n%s", strings.Join(got, ","), wantReq)
	}
	if want.Namespace == nil || !namespaces[want.Namespace.Name] || want.ServiceAccount == nil || want.RoleBinding == nil {
		t.Fatalf("ShellObjects %+v: want a namespace (made: %v), a ServiceAccount and a RoleBinding", want, namespaces)
	}
	for _, o := range []struct {
		res, name string
		want      any
	}{
		{"serviceaccounts", want.ServiceAccount.Name, want.ServiceAccount},
		{"rolebindings", want.RoleBinding.Name, want.RoleBinding},
	} {
		gvr := schema.GroupVersionResource{Version: "v1", Resource: o.res}
		if o.res == "rolebindings" {
			gvr.Group = "rbac.authorization.k8s.io"
		}
		obj, err := cs.Tracker().Get(gvr, pod.Namespace, o.name)
		if err != nil {
			t.Fatalf("%s %s: %v", o.res, o.name, err)
		}
		switch w := o.want.(type) {
		case *corev1.ServiceAccount:
			g := obj.(*corev1.ServiceAccount)
			if !equality.Semantic.DeepEqual(g.Labels, w.Labels) || *g.AutomountServiceAccountToken != *w.AutomountServiceAccountToken {
				t.Errorf("ServiceAccount %+v, ShellObjects says %+v", g, w)
			}
		case *rbacv1.RoleBinding:
			g := obj.(*rbacv1.RoleBinding)
			if !equality.Semantic.DeepEqual(g.Labels, w.Labels) || g.RoleRef != w.RoleRef || !equality.Semantic.DeepEqual(g.Subjects, w.Subjects) {
				t.Errorf("RoleBinding %+v, ShellObjects says %+v", g, w)
			}
		}
	}
	made := pod.DeepCopy()
	for k := range made.Annotations {
		if strings.HasPrefix(k, pods.AnnoSessionsPrefix) {
			delete(made.Annotations, k)
		}
	}
	if !equality.Semantic.DeepEqual(made.Spec, want.Pod.Spec) || !equality.Semantic.DeepEqual(made.ObjectMeta.Annotations, want.Pod.Annotations) ||
		!equality.Semantic.DeepEqual(made.Labels, want.Pod.Labels) || made.Name != want.Pod.Name || made.Namespace != want.Pod.Namespace {
		t.Errorf("the pod made differs from ShellObjects':\n%+v\n%+v", made, want.Pod)
	}
}

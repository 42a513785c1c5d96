package kube

import (
	"net"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/bastion-ssh/bastion/auth"
	"github.com/bastion-ssh/bastion/session"
)

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "localhost.": true, "app.localhost": true,
		"127.0.0.1": true, "127.1.2.3": true, "::1": true, "[::1]": true, "::ffff:127.0.0.1": true,
		"10.0.0.1": false, "web": false, "localhost.example.org": false, "::2": false, "": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

// TestLoopbackIsNeverTheBastions: in kube mode, ssh -L to localhost,
// 127.0.0.0/8 or ::1 means the account's own shell pod. sshd leaves such
// destinations to the backend (InCluster), and the backend never dials
// the bastion's own loopback: a listener there gets no connection, and
// with no shell pod running the user is told so.
func TestLoopbackIsNeverTheBastions(t *testing.T) {
	t.Parallel()
	b, cl := testBackend(t, "r/shell@sha256:01")
	t.Cleanup(b.Close)
	cl.UseClient(fake.NewClientset())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			accepted <- struct{}{}
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	acct := auth.Account{Name: "alice", UID: 5001, GID: 5001, Home: "/home/alice"}
	r := session.Request{User: &auth.User{Account: acct}, Account: acct}
	for _, host := range []string{"localhost", "127.0.0.1", "127.0.0.2", "::1"} {
		if !b.InCluster(host) {
			t.Errorf("InCluster(%q) = false: sshd would apply forwarding.allow and dial it from the bastion", host)
		}
		c, err := b.Dial(t.Context(), r, "tcp", net.JoinHostPort(host, port))
		if err == nil {
			c.Close()
			t.Errorf("-L to %s:%s connected", host, port)
			continue
		}
		msg, ok := session.UserMessage(err)
		if !ok || !strings.Contains(msg, "localhost is your shell") {
			t.Errorf("-L to %s: %v; want the one line saying the shell is not running", host, err)
		}
	}
	select {
	case <-accepted:
		t.Fatal("the bastion's own loopback listener got a connection")
	case <-time.After(100 * time.Millisecond):
	}
}

package kube

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// TestListenUnixEarly: Listen("unix") does not wait for the relay (its
// exec overlaps the shell's, instead of delaying the prompt). With a
// relay that takes 3 s to start, Listen returns at once with the socket's
// path, Ready comes when the relay listens, and a process of the account
// that connects through the path is accepted. A relay that cannot start
// closes the listener: Ready and Accept say why.
func TestListenUnixEarly(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.Pod.HelperImage = kubetest.ShellImage
	u := person("early", 4245, kubeenv.Home(t, 4245, 4245))
	b := e.backend(t, cfg)
	req := session.Request{User: u, Account: u.Account}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	run := func(cmd string) (int, string) {
		var out sessiontest.SyncBuffer
		r := req
		r.Command, r.Stdin, r.Stdout, r.Stderr = cmd, strings.NewReader(""), &out, &out
		st, err := b.Run(ctx, r)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return st.Code, out.String()
	}
	run("true") // a warm pod: what follows times the relay alone

	const slow = 3 * time.Second
	b.relayWrap = []string{"/bin/sh", "-c", `sleep 3; exec "$0" "$@"`}
	began := time.Now()
	l, err := b.Listen(ctx, req, "unix", "")
	took := time.Since(began)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer l.Close()
	if took >= slow {
		t.Fatalf("Listen took %s: it waited for the relay (%s to start)", took, slow)
	}
	path := l.Addr().String()
	if !strings.HasPrefix(path, "/tmp/bastion-ssh-") || !strings.HasSuffix(path, "/agent.sock") {
		t.Fatalf("Addr %q", path)
	}
	st, ok := l.(session.Starting)
	if !ok {
		t.Fatal("the listener has no Ready")
	}
	if err := st.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if w := time.Since(began); w < slow {
		t.Fatalf("Ready after %s, before the relay could listen", w)
	}
	t.Logf("Listen returned after %s, the relay listened after %s", took.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer c.Close()
		msg := make([]byte, 5)
		if _, err := io.ReadFull(c, msg); err != nil {
			accepted <- err
			return
		}
		_, err = c.Write([]byte{0, 0, 0, 5, 12, 0, 0, 0, 0}) // an agent with no keys
		accepted <- err
	}()
	code, out := run("SSH_AUTH_SOCK='" + path + "' ssh-add -l; echo \"ssh-add $?\"; stat -c '%a' \"$(dirname '" + path + "')\"")
	if err := <-accepted; err != nil {
		t.Fatalf("accept: %v (%d %q)", err, code, out)
	}
	if !strings.Contains(out, "ssh-add 1\n700\n") {
		t.Errorf("through the socket: %q", out)
	}

	// A relay that dies before it listens.
	b.relayWrap = []string{"/bin/sh", "-c", `echo 'error cannot listen here'`}
	l2, err := b.Listen(ctx, req, "unix", "")
	if err != nil {
		t.Fatalf("Listen (failing relay): %v", err)
	}
	defer l2.Close()
	if err := l2.(session.Starting).Ready(ctx); err == nil || !strings.Contains(err.Error(), "cannot listen here") {
		t.Fatalf("Ready with a failing relay: %v", err)
	}
	if _, err := l2.Accept(); err == nil || !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "cannot listen here") {
		t.Fatalf("Accept with a failing relay: %v", err)
	}
	b.relayWrap = nil
}

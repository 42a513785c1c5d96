package kube

import (
	"strings"
	"testing"

	"github.com/bastion-ssh/bastion/integration/kubetest"
	"github.com/bastion-ssh/bastion/session"
	"github.com/bastion-ssh/bastion/session/kube/kubeenv"
	"github.com/bastion-ssh/bastion/session/sessiontest"
)

// TestConformance runs the backend conformance suite on the real test
// cluster, as the bastion's own ServiceAccount with deploy/rbac's roles.
func TestConformance(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	u := person("conformance", 4242, kubeenv.Home(t, 4242, 4242))
	ns := e.namespace(t, cfg, who(u, u.Account, cfg.ToolPrefix, e.project))
	e.echoService(t, ns)
	sessiontest.Run(t, func(t *testing.T) sessiontest.Harness {
		b := e.backend(t, cfg)
		return sessiontest.Harness{
			Backend:          b,
			Account:          u.Account,
			SFTPServer:       kubetest.SFTPServer,
			EchoAddr:         "echo:80",
			SignalAsExitCode: true,
			ListenRefused:    true, // no kube.pod.helper_image
			Close:            b.Close,
		}
	})
}

// TestHelperConformance runs the conformance suite with bastion-helper in
// the pods (kube.pod.helper_image; the test shell image stands in for
// bastion's, which holds the helper at the same path): exit signals by
// name, as with the local backend.
func TestHelperConformance(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	u := person("helperconf", 4243, kubeenv.Home(t, 4243, 4243))
	ns := e.namespace(t, cfg, who(u, u.Account, cfg.ToolPrefix, e.project))
	e.echoService(t, ns)

	// A cluster brought up before the helper was added to the test
	// image cannot run this test: say so instead of failing every case.
	probe := e.backend(t, cfg)
	var out sessiontest.SyncBuffer
	st, err := probe.Run(t.Context(), session.Request{
		User: u, Account: u.Account, Command: "test -x " + kubetest.HelperCommand + " && echo present",
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out,
	})
	if err != nil {
		t.Fatalf("probe session: %v", err)
	}
	if st.Code != 0 || !strings.Contains(out.String(), "present") {
		t.Skipf("the test shell image has no %s (an integration/cluster/up older than cmd/bastion-helper built it); bring the cluster up again", kubetest.HelperCommand)
	}

	cfg.Pod.HelperImage = kubetest.ShellImage
	sessiontest.Run(t, func(t *testing.T) sessiontest.Harness {
		b := e.backend(t, cfg)
		return sessiontest.Harness{
			Backend:    b,
			Account:    u.Account,
			SFTPServer: kubetest.SFTPServer,
			EchoAddr:   "echo:80",
			Close:      b.Close,
		}
	})
}

package kube

import (
	"testing"

	"github.com/bastion-ssh/bastion/integration/kubetest"
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
			Close:            b.Close,
		}
	})
}

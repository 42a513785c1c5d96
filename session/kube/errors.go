package kube

import (
	"context"
	"errors"
	"fmt"
	"github.com/bastion-ssh/bastion/ops"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/bastion-ssh/bastion/session"
)

// unavailable reports whether err means the API server could not be
// asked: no connection, a timeout, or a 5xx/429 answer. An API answer
// such as NotFound or Forbidden is not unavailability.
func unavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		code := st.Status().Code
		return code == 0 || code >= 500 || code == 429 ||
			apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err)
	}
	return true
}

// apiError wraps err from doing what in cluster c; when the API server
// could not be asked, the user reads that the project's cluster is
// unavailable.
func apiError(c *cluster, what string, err error) error {
	err = fmt.Errorf("%s in cluster %s: %w", what, c.cfg.Name, err)
	if unavailable(err) {
		return unavailableError(c, err)
	}
	return err
}

func unavailableError(c *cluster, err error) error {
	ops.KubeAPIErrors.WithLabelValues(c.cfg.Name).Inc()
	return session.UserErrorf(err, fmt.Sprintf("the cluster for project %s is unavailable; try again in a few minutes", c.cfg.Name))
}

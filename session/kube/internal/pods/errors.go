package pods

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/bastion-ssh/bastion/ops"
	"github.com/bastion-ssh/bastion/session"
)

// Unavailable reports whether err means the API server could not be
// asked: no connection, a timeout, or a 5xx/429 answer. An API answer
// such as NotFound or Forbidden is not unavailability.
func Unavailable(err error) bool {
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

// APIError wraps err from doing what in project's cluster; when the API
// server could not be asked, the user reads that the project's cluster is
// unavailable.
func APIError(project, what string, err error) error {
	err = fmt.Errorf("%s in cluster %s: %w", what, project, err)
	if Unavailable(err) {
		return UnavailableError(project, err)
	}
	return err
}

// UnavailableError is err as the user reads it: the project's cluster is
// unavailable. It counts in bastion_kube_api_errors_total.
func UnavailableError(project string, err error) error {
	ops.KubeAPIErrors.WithLabelValues(project).Inc()
	return session.UserErrorf(err, fmt.Sprintf("the cluster for project %s is unavailable; try again in a few minutes", project))
}

// UserError is APIError unless err already carries a message for the
// user.
func UserError(project, what string, err error) error {
	if _, ok := session.UserMessage(err); ok {
		return err
	}
	return APIError(project, what, err)
}

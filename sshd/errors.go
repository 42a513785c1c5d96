package sshd

import "errors"

// cutCause is a cancellation cause whose text is shown to the user; reason
// is its bounded metric label.
type cutCause struct {
	reason string
	msg    string
}

func (c *cutCause) Error() string { return c.msg }

func userCause(reason, msg string) error { return &cutCause{reason: reason, msg: msg} }

// causeMessage returns the user-facing text of a cancellation cause.
func causeMessage(err error) (string, bool) {
	var uc *cutCause
	if errors.As(err, &uc) {
		return uc.msg, true
	}
	return "", false
}

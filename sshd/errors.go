package sshd

import (
	"errors"
	"syscall"
)

var syscallEMFILE = syscall.EMFILE

// userCause is a cancellation cause whose text is shown to the user.
type userCause string

func (c userCause) Error() string { return string(c) }

// causeMessage returns the user-facing text of a cancellation cause.
func causeMessage(err error) (string, bool) {
	var uc userCause
	if errors.As(err, &uc) {
		return string(uc), true
	}
	return "", false
}

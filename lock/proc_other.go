//go:build !linux

package lock

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// self is the record this process writes when it wins (Term left to the caller). Off
// Linux only the pid is recorded.
func self() Owner { return Owner{PID: os.Getpid()} }

// WaitExited returns at once off Linux: there is no pidfd to wait on. See the Linux
// documentation.
func WaitExited(Owner, time.Duration) error { return nil }

// State cannot be told here: it is "".
func (o Owner) State() string { return "" }

// ExitFile is unsupported off Linux (there is no pidfd): the error matches
// errors.ErrUnsupported. See the Linux documentation.
func ExitFile(o Owner) (*os.File, error) {
	return nil, fmt.Errorf("lock: watching %s: %w", o, errors.ErrUnsupported)
}

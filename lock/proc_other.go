//go:build !linux

package lock

import (
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

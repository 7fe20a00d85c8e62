//go:build unix

package cluster

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// dupFile returns a close-on-exec duplicate of f with a lifetime of its own. It goes
// through SyscallConn rather than f.Fd, which would switch f to blocking mode.
func dupFile(f *os.File) (*os.File, error) {
	if f == nil {
		return nil, os.ErrInvalid
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("%w (%v)", os.ErrClosed, err)
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", derr)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

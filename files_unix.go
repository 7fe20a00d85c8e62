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

// fdLimit returns this process's soft RLIMIT_NOFILE, or 0 when unknown or unlimited.
func fdLimit() int64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || rl.Cur > 1<<40 {
		return 0
	}
	return int64(rl.Cur)
}

package ipc

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// canPassFiles reports whether nc passes descriptors: a Unix socket (on Linux).
func canPassFiles(nc net.Conn) bool {
	_, ok := nc.(*net.UnixConn)
	return ok
}

// dupFile returns a close-on-exec duplicate of f's descriptor. It goes through
// SyscallConn rather than f.Fd, which would switch f to blocking mode.
func dupFile(f *os.File) (int, error) {
	if f == nil {
		return -1, os.ErrInvalid
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("%w (%v)", os.ErrClosed, err) // Control fails only on a closed file
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", derr)
	}
	return fd, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// writeWithFDs writes one whole frame b with fds attached to its first byte: a single
// sendmsg carries the descriptors and as much of b as the socket takes; if that is not
// all of b, the rest follows in plain writes (it carries no descriptors).
func writeWithFDs(nc net.Conn, b []byte, fds []int) error {
	uc := nc.(*net.UnixConn) // dupFiles checked canPassFiles
	n, _, err := uc.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
	if err != nil {
		return err
	}
	if n < len(b) {
		_, err = uc.Write(b[n:])
	}
	return err
}

package ipc

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// socketQueue tells how many bytes wait in a socket's receive queue (SIOCINQ): bytes the
// peer has sent and this side has not read yet. The zero value, or one over a conn
// without a RawConn, tells 0.
type socketQueue struct {
	rc syscall.RawConn
	fn func(fd uintptr) // q.ioctl, bound at the first look (q is then in place) so that a look allocates nothing
	n  int
}

func newSocketQueue(rc syscall.RawConn) socketQueue { return socketQueue{rc: rc} }

func (q *socketQueue) queued() int {
	if q.rc == nil {
		return 0
	}
	if q.fn == nil {
		q.fn = q.ioctl
	}
	q.n = 0
	_ = q.rc.Control(q.fn)
	return q.n
}

func (q *socketQueue) ioctl(fd uintptr) { q.n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }

package ipc

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// socketQueued returns how many bytes wait in the receive queue of rc's socket
// (SIOCINQ): bytes the peer has sent and this side has not read yet. 0 if it cannot tell.
func socketQueued(rc syscall.RawConn) int {
	n := 0
	if rc != nil {
		_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	}
	return n
}

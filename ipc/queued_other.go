//go:build !linux

package ipc

import "syscall"

// socketQueue is Linux-only (SIOCINQ): elsewhere it tells 0, and a frame is staged by
// the bytes read alone.
type socketQueue struct{}

func newSocketQueue(syscall.RawConn) socketQueue { return socketQueue{} }

func (*socketQueue) queued() int { return 0 }

//go:build !linux

package ipc

import "syscall"

// socketQueued is Linux-only (SIOCINQ): elsewhere a frame is staged by the bytes read
// alone.
func socketQueued(syscall.RawConn) int { return 0 }

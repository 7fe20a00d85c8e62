//go:build !linux

package ipc

import (
	"net"
	"testing"
	"time"
)

// waitDrained gives nc's reader time to take what was sent to it (no portable way to
// look at a socket's receive queue).
func waitDrained(t *testing.T, nc net.Conn) { time.Sleep(20 * time.Millisecond) }

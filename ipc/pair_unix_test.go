//go:build !windows

package ipc

import (
	"net"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// unixSocketPair returns the two ends of a connected Unix stream socketpair as
// *net.UnixConn, closed at the end of the test.
func unixSocketPair(tb testing.TB) (*net.UnixConn, *net.UnixConn) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	require.NoError(tb, err)
	conn := func(fd int) *net.UnixConn {
		unix.CloseOnExec(fd) // SOCK_CLOEXEC is not portable; the test runs no children
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close() // FileConn dups it
		c, err := net.FileConn(f)
		require.NoError(tb, err)
		tb.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// transports are the kinds of connection the transport-independent tests run over.
func transports() []transport {
	return []transport{
		{"tcp", socketPair},
		{"unix", func(tb testing.TB) (net.Conn, net.Conn) { return unixSocketPair(tb) }},
	}
}

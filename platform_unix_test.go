//go:build !windows

package cluster_test

import (
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// sigStop and sigCont pause and resume a member process.
var sigStop, sigCont = syscall.SIGSTOP, syscall.SIGCONT

// requireStopSignals skips t where a process cannot be paused by a signal.
func requireStopSignals(*testing.T) {}

// writeWithFile writes b to the Unix connection c in one sendmsg that passes f's
// descriptor along, as a (possibly hostile) peer would.
func writeWithFile(t *testing.T, c net.Conn, b []byte, f *os.File) {
	t.Helper()
	_, _, err := c.(*net.UnixConn).WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil)
	require.NoError(t, err)
}

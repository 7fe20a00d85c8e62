//go:build !windows

package cluster_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// sigStop and sigCont pause and resume a member process.
var sigStop, sigCont = syscall.SIGSTOP, syscall.SIGCONT

// requireStopSignals skips t where a process cannot be paused by a signal.
func requireStopSignals(*testing.T) {}

// waitStopped waits until the process pid is stopped (SIGSTOP is delivered asynchronously:
// until then it may still answer), where /proc tells; elsewhere it returns at once.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/stat", pid)
	if _, err := os.Stat(path); err != nil {
		return
	}
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		i := bytes.LastIndexByte(b, ')') // the name, in parentheses, may hold anything
		if err != nil || i < 0 || i+2 >= len(b) {
			return false
		}
		return b[i+2] == 'T' || b[i+2] == 't'
	}, waitTimeout, time.Millisecond, "pid %d did not stop", pid)
}

// writeWithFile writes b to the Unix connection c in one sendmsg that passes f's
// descriptor along, as a (possibly hostile) peer would.
func writeWithFile(t *testing.T, c net.Conn, b []byte, f *os.File) {
	t.Helper()
	_, _, err := c.(*net.UnixConn).WriteMsgUnix(b, unix.UnixRights(int(f.Fd())), nil)
	require.NoError(t, err)
}

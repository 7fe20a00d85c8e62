package cluster_test

import (
	"net"
	"os"
	"testing"
)

// sigStop and sigCont do not exist on Windows: requireStopSignals skips the tests that
// would send them.
var sigStop, sigCont os.Signal

// requireStopSignals skips t: Windows cannot pause a process with a signal.
func requireStopSignals(t *testing.T) {
	t.Helper()
	t.Skip("pausing a member needs SIGSTOP, which Windows does not have")
}

// waitStopped returns at once: tests that stop a member skip on Windows.
func waitStopped(*testing.T, int) {}

// writeWithFile skips t: Windows cannot pass descriptors over a socket.
func writeWithFile(t *testing.T, _ net.Conn, _ []byte, _ *os.File) {
	t.Helper()
	t.Skip("passing a descriptor needs SCM_RIGHTS, which Windows does not have")
}

package cluster

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/lock"
)

// predecessorEnv makes this test binary a stand-in for a killed TCP Leader: it takes the
// guard lock at the path given (recording its identity, as a Leader does), then execs
// sleep. The exec closes the lock's descriptor (O_CLOEXEC), which frees the flock, while
// the process, with the same pid and start time, goes on: a Leader after SIGKILL, as the
// kernel is still tearing it down, held still.
const predecessorEnv = "CLUSTER_TEST_TCP_PREDECESSOR"

func init() {
	path := os.Getenv(predecessorEnv)
	if path == "" {
		return
	}
	if won, err := lock.New(path).TryLock(); !won || err != nil {
		fmt.Fprintln(os.Stderr, "predecessor: taking the lock:", won, err)
		os.Exit(2)
	}
	fmt.Println("locked")
	sleep, err := exec.LookPath("sleep")
	if err == nil {
		err = syscall.Exec(sleep, []string{"sleep", "60"}, os.Environ())
	}
	fmt.Fprintln(os.Stderr, "predecessor: exec sleep:", err)
	os.Exit(2)
}

// A TCP Leader killed with SIGKILL frees its port and its guard lock while the kernel
// is still tearing it down; its successor must wait for it to be gone before it builds
// its Service, as on the Unix transport, so the upstream never sees both.
func TestTCPLeaderWaitsForItsPredecessorToExit(t *testing.T) {
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	cfg, err := Config{Name: "settle", Dir: dir, Transport: TransportTCP, Port: port, Logger: slog.New(slog.DiscardHandler),
		NewService: func(context.Context) (Service, error) { return nil, nil }}.validate()
	require.NoError(t, err)

	prev := exec.Command(os.Args[0], "-test.run=^$")
	prev.Env = append(os.Environ(), predecessorEnv+"="+filepath.Join(dir, "settle.lock"))
	prev.Stderr = os.Stderr
	out, err := prev.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, prev.Start())
	defer func() { _ = prev.Process.Kill(); _ = prev.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked\n", line)

	// Lead once the predecessor has let go of the guard (at its exec).
	tr := &tcpTransport{cfg: cfg}
	require.Eventually(t, func() bool {
		won, _, err := tr.claim()
		require.NoError(t, err)
		return won
	}, 30*time.Second, time.Millisecond, "the predecessor frees the guard when it execs")
	defer tr.release()
	require.Equal(t, prev.Process.Pid, tr.guard.Previous().PID)

	settled := make(chan struct{})
	go func() { tr.settle(); close(settled) }()
	select {
	case <-settled:
		t.Fatal("settle returned while the previous Leader's process still runs")
	case <-time.After(100 * time.Millisecond):
	}
	require.NoError(t, prev.Process.Signal(syscall.SIGKILL))
	select {
	case <-settled:
	case <-time.After(30 * time.Second):
		t.Fatal("settle did not return after the previous Leader exited")
	}
}

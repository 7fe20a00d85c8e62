package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

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

	// The predecessor, as its guard lock recorded it: a live process that no longer
	// holds the lock (as after SIGKILL, before the kernel has finished with it).
	prev := exec.Command("sleep", "60")
	require.NoError(t, prev.Start())
	defer func() { _ = prev.Process.Kill(); _ = prev.Wait() }()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", prev.Process.Pid))
	require.NoError(t, err)
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	start := fields[19] // field 22 of stat: start time in clock ticks
	ns, err := os.Readlink("/proc/self/ns/pid")
	require.NoError(t, err)
	pidns := strings.TrimSuffix(strings.TrimPrefix(ns, "pid:["), "]")
	record := fmt.Sprintf("term=1 pid=%d start=%s pidns=%s", prev.Process.Pid, start, pidns)
	record += strings.Repeat(" ", 127-len(record)) + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "settle.lock"), []byte(record), 0o600))

	tr := &tcpTransport{cfg: cfg}
	won, _, err := tr.claim()
	require.NoError(t, err)
	require.True(t, won)
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

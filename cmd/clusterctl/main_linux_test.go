package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A Leader that holds the lock but does not answer (stopped) is reported as such,
// within the timeout.
func TestStatusOfAStoppedLeader(t *testing.T) {
	dir := tempDir(t)
	p := startLeader(t, dir, nil)
	require.NoError(t, p.Process.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { _ = p.Process.Signal(syscall.SIGCONT) })
	// SIGSTOP is delivered asynchronously: until the kernel shows the process stopped,
	// it may still answer.
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Process.Pid))
		i := bytes.LastIndexByte(b, ')')
		return err == nil && i >= 0 && i+2 < len(b) && b[i+2] == 'T'
	}, 30*time.Second, time.Millisecond, "the leader did not stop")
	code, _, errOut := ctl(t, "status", "-name", "demo", "-dir", dir, "-timeout", "500ms")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, fmt.Sprintf("the lock is held (recorded holder: pid %d, term 1, which is stopped) but the leader did not answer", p.Process.Pid))
	require.NoError(t, p.Process.Signal(syscall.SIGCONT))
	code, out, errOut := ctl(t, "status", "-name", "demo", "-dir", dir)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, fmt.Sprintf("pid %d", p.Process.Pid))
}

// startLeader runs a Leader process of cluster "demo" in dir (as cred, if set).
func startLeader(t *testing.T, dir string, cred *syscall.Credential) *exec.Cmd {
	t.Helper()
	return startLeaderBin(t, os.Args[0], dir, cred)
}

// startLeaderBin is startLeader with the test binary at bin.
func startLeaderBin(t *testing.T, bin, dir string, cred *syscall.Credential) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), leaderEnv+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	line := make([]byte, 64)
	n, err := out.Read(line)
	require.NoError(t, err)
	require.Equal(t, "leading\n", string(line[:n]))
	return cmd
}

// A Leader of another uid that does not admit this one refuses it: exit 1, saying so.
func TestStatusRefusedByTheLeader(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the Leader as uid 1000")
	}
	dir := tempDir(t)
	require.NoError(t, os.Chown(dir, 1000, 1000))
	bin := filepath.Join(dir, "clusterctl.test") // a copy uid 1000 may run
	b, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, b, 0o755))
	startLeaderBin(t, bin, dir, &syscall.Credential{Uid: 1000, Gid: 1000})
	code, _, errOut := ctl(t, "status", "-name", "demo", "-dir", dir, "-allow-uid", "1000")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "not authorized")
}

package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/lock"
)

// woken reports whether h was woken within d.
func woken(h *herald, d time.Duration) bool {
	select {
	case <-h.wake:
		return true
	case <-time.After(d):
		return false
	}
}

// heraldConfig returns a fresh Dir, removed when the test ends, and a member's config
// in it.
func heraldConfig(t *testing.T) (string, *config) {
	t.Helper()
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg, err := Config{Name: "h", Dir: dir, Lead: LeadNever, Logger: slog.New(slog.DiscardHandler)}.validate()
	require.NoError(t, err)
	return dir, cfg
}

// The survivors of a Leader's death wait for news instead of retrying: a Leader's
// socket or token file put in place in Dir wakes every member watching it, and other
// files there wake none.
func TestHeraldWakesWhenALeaderPutsItsSocketInPlace(t *testing.T) {
	dir, cfg := heraldConfig(t)
	a, b := newHerald(cfg), newHerald(cfg)
	defer a.close()
	defer b.close()
	a.watch()
	b.watch()
	require.NotNil(t, a.watcher)
	require.Same(t, a.watcher, b.watcher, "the members of a process share one watch of Dir")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "h.sock~"), nil, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other"), nil, 0o600))
	require.False(t, woken(a, 50*time.Millisecond), "a staging name or another file is no news")

	for _, name := range []string{"h.sock", "h.token"} {
		require.NoError(t, os.Rename(filepath.Join(dir, "h.sock~"), filepath.Join(dir, name)))
		require.True(t, woken(a, time.Minute), name)
		require.True(t, woken(b, time.Minute), name)
		require.NoError(t, os.Rename(filepath.Join(dir, name), filepath.Join(dir, "h.sock~")))
	}
	a.close()
	require.NoError(t, os.Rename(filepath.Join(dir, "h.sock~"), filepath.Join(dir, "h.sock")))
	require.True(t, woken(b, time.Minute), "one member closing leaves the others watched")
	b.close()
	dirWatches.mu.Lock()
	defer dirWatches.mu.Unlock()
	require.Empty(t, dirWatches.m, "the last one closes the watch")
}

// A watch of Dir ends when Dir is removed; the member is woken (it retries as it would
// unwatched), and once Dir exists again its next watch is a new one that works.
func TestHeraldWatchesDirAgainAfterItsWatchEnded(t *testing.T) {
	dir, cfg := heraldConfig(t)
	h := newHerald(cfg)
	defer h.close()
	h.watch()
	dead := h.watcher
	require.NotNil(t, dead)

	require.NoError(t, os.Remove(dir))
	require.True(t, woken(h, time.Minute), "the end of the watch is news")
	require.False(t, dead.alive())
	require.NoError(t, os.Mkdir(dir, 0o700))

	h.watch()
	require.NotNil(t, h.watcher)
	require.NotSame(t, dead, h.watcher, "the ended watch is replaced")
	require.True(t, h.watcher.alive())
	dirWatches.mu.Lock()
	watches, current := len(dirWatches.m), dirWatches.m[dir]
	dirWatches.mu.Unlock()
	require.Equal(t, 1, watches)
	require.Same(t, h.watcher, current, "the new watch is the one the process shares")
	select {
	case <-dead.done:
	default:
		t.Fatal("the ended watch's goroutine is still running after it was dropped")
	}

	require.NoError(t, os.WriteFile(filepath.Join(dir, "h.sock"), nil, 0o600))
	require.True(t, woken(h, time.Minute), "the new watch reports the Leader's socket")
}

// A member that followed a Leader is woken when that Leader's process exits, and only
// then may it wait quietly; a goodbye (the Leader lives on) ends that.
func TestHeraldWakesWhenTheFollowedLeaderExits(t *testing.T) {
	_, cfg := heraldConfig(t)
	h := newHerald(cfg)
	defer h.close()

	// The Leader: another process, recorded in the lock file as a Leader records itself.
	leader := exec.Command("sleep", "60")
	require.NoError(t, leader.Start())
	defer func() { _ = leader.Process.Kill(); _ = leader.Wait() }()
	writeOwner(t, cfg.lockPath, leader.Process.Pid)

	var exited atomic.Int32
	h.follow(cfg.lockPath, leader.Process.Pid+1, func() { t.Error("a process not watched cannot be reported") })
	require.False(t, h.quiet(), "a welcome that names another process than the lock file is not watched")
	h.follow(cfg.lockPath, leader.Process.Pid, func() { exited.Add(1) })
	require.True(t, h.quiet())
	require.False(t, woken(h, 50*time.Millisecond), "the Leader is alive")
	require.Zero(t, exited.Load(), "the Leader is alive")
	require.NoError(t, leader.Process.Signal(syscall.SIGKILL))
	require.True(t, woken(h, time.Minute), "the Leader was killed")
	require.Equal(t, int32(1), exited.Load(), "the follower was told, before the election's wake-up")

	h.leftGracefully()
	require.False(t, h.quiet(), "a Leader that said goodbye may live on: nothing to wait for")

	h.lead()
	require.Nil(t, h.watcher, "a Leader keeps no watch")
}

// writeOwner writes the lock file's record of a Leader with pid, as that Leader would
// have written it: its start time and pid namespace identify the process.
func writeOwner(t *testing.T, path string, pid int) {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	var ns syscall.Stat_t
	require.NoError(t, syscall.Stat("/proc/self/ns/pid", &ns))
	record := fmt.Sprintf("term=1 pid=%d start=%s pidns=%d\n", pid, fields[19], ns.Ino)
	require.NoError(t, os.WriteFile(path, []byte(record), 0o600))
	o, err := lock.ReadOwner(path)
	require.NoError(t, err)
	require.Equal(t, pid, o.PID)
	require.NotZero(t, o.Start)
}

// A Leader handing over touches the lock file (touchLock): a member that follows it is
// told, so that its connection reads the goodbye at once; one that stopped following
// is not.
func TestHeraldTellsAFollowerItsLeaderIsHandingOver(t *testing.T) {
	_, cfg := heraldConfig(t)
	h := newHerald(cfg)
	defer h.close()
	require.NoError(t, os.WriteFile(cfg.lockPath, []byte("term=1\n"), 0o600))

	other := filepath.Join(cfg.Dir, "other.lock") // another cluster's, in the same Dir
	require.NoError(t, os.WriteFile(other, []byte("term=1\n"), 0o600))

	told := make(chan struct{}, 8)
	h.follow(cfg.lockPath, os.Getpid(), func() { told <- struct{}{} })
	require.NotNil(t, h.watcher)
	touchLock(other)
	touchLock(cfg.lockPath)
	select {
	case <-told:
	case <-time.After(time.Minute):
		t.Fatal("the follower was not told of the handover")
	}
	require.NoError(t, os.WriteFile(filepath.Join(cfg.Dir, "h.token"), nil, 0o600))
	require.True(t, woken(h, time.Minute)) // every earlier event has been read
	require.Empty(t, told, "another cluster's handover was taken for this one's")

	h.stopExit()
	touchLock(cfg.lockPath)
	require.NoError(t, os.WriteFile(filepath.Join(cfg.Dir, "h.sock"), nil, 0o600))
	require.True(t, woken(h, time.Minute), "the watch still reports a Leader's socket")
	require.Empty(t, told, "a member that stopped following was told")
}

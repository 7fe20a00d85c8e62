package lock

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// holder starts a process that stands for a Leader, and returns its lock record.
func holder(t *testing.T) (*exec.Cmd, Owner) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	start, err := startTime(cmd.Process.Pid)
	require.NoError(t, err)
	return cmd, Owner{Term: 1, PID: cmd.Process.Pid, Start: start, PIDNS: self().PIDNS}
}

func TestSelfRecordIdentifiesThisProcess(t *testing.T) {
	me := self()
	require.Equal(t, os.Getpid(), me.PID)
	require.NotZero(t, me.Start)
	require.NotZero(t, me.PIDNS)
	got, err := parseRecord(me.record())
	require.NoError(t, err)
	require.Equal(t, me, got)
}

func TestWaitExitedWaitsUntilTheHolderIsGone(t *testing.T) {
	cmd, o := holder(t)
	// Alive: the wait runs out, and says whom it waited for.
	err := WaitExited(o, 20*time.Millisecond)
	require.ErrorContains(t, err, "has not finished exiting")
	require.ErrorContains(t, err, o.String())
	// Killed but not yet reaped (a zombie): it has exited, all its descriptors closed.
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	require.NoError(t, WaitExited(o, time.Minute))
	// Reaped: nothing left to wait for.
	_ = cmd.Wait()
	require.NoError(t, WaitExited(o, time.Minute))
}

// unidentifiable returns records that cannot be told to be o's holder, by what makes
// them so; with none, the empty record too.
func unidentifiable(o Owner, none bool) map[string]Owner {
	m := map[string]Owner{
		"the pid now names another process": {Term: 1, PID: o.PID, Start: o.Start + 1, PIDNS: o.PIDNS},
		"another pid namespace":             {Term: 1, PID: o.PID, Start: o.Start, PIDNS: o.PIDNS + 1},
		"a record without identity":         {Term: 1, PID: o.PID},
		"this process":                      self(),
	}
	if none {
		m["no holder"] = Owner{}
	}
	return m
}

func TestWaitExitedIgnoresWhatItCannotIdentify(t *testing.T) {
	_, o := holder(t)
	for name, other := range unidentifiable(o, true) {
		// The holder is alive; a wait that cannot tell it is the holder returns at once
		// instead of waiting out the limit.
		require.NoError(t, WaitExited(other, time.Hour), name)
	}
}

func TestUnlockClearsTheIdentitySoNobodyWaits(t *testing.T) {
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	path := dir + "/x.lock"
	l := New(path)
	won, err := l.TryLock()
	require.NoError(t, err)
	require.True(t, won)
	o, err := ReadOwner(path)
	require.NoError(t, err)
	require.Equal(t, self().Start, o.Start, "a holder records who it is")
	require.NoError(t, l.Unlock())
	o, err = ReadOwner(path)
	require.NoError(t, err)
	require.Equal(t, Owner{Term: 1, PID: os.Getpid()}, o, "a holder that let go is not waited for")

	next := New(path)
	won, err = next.TryLock()
	require.NoError(t, err)
	require.True(t, won)
	require.Equal(t, Owner{Term: 1, PID: os.Getpid()}, next.Previous())
	require.NoError(t, next.Unlock())
}

func TestExitFileBecomesReadableWhenTheHolderExits(t *testing.T) {
	cmd, o := holder(t)
	f, err := ExitFile(o)
	require.NoError(t, err)
	defer f.Close()
	readable := func(timeout int) bool {
		fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, timeout)
		require.NoError(t, err)
		return n > 0
	}
	require.False(t, readable(20), "the holder is alive")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	require.True(t, readable(int(time.Minute.Milliseconds())), "the holder was killed")
}

func TestExitFileRefusesWhatItCannotIdentify(t *testing.T) {
	_, o := holder(t)
	for name, other := range unidentifiable(o, false) {
		f, err := ExitFile(other)
		require.Error(t, err, name)
		require.Nil(t, f, name)
	}
}

package lock_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/lock"
)

func TestNewTouchesNothing(t *testing.T) {
	path := lockPath(t)
	l := lock.New(path)
	require.Equal(t, path, l.Path())
	require.False(t, l.Locked())
	require.Zero(t, l.Term())
	require.NoError(t, l.Unlock(), "Unlock of a Lock never taken")
	_, err := os.Lstat(path)
	require.ErrorIs(t, err, fs.ErrNotExist, "New or Unlock created the file")
}

func TestTwoLocksInOneProcess(t *testing.T) {
	path := lockPath(t)
	a, b := lock.New(path), lock.New(path)

	mustWin(t, a)
	require.True(t, a.Locked())
	require.Equal(t, uint64(1), a.Term())
	mustLose(t, b)
	require.Zero(t, b.Term())

	// TryLock on the holder changes nothing.
	won, err := a.TryLock()
	require.NoError(t, err)
	require.True(t, won)
	require.Equal(t, uint64(1), a.Term())
	o, err := lock.ReadOwner(path)
	require.NoError(t, err)
	require.Equal(t, 1, int(o.Term))
	require.Equal(t, os.Getpid(), o.PID)

	require.NoError(t, a.Unlock())
	require.NoError(t, a.Unlock(), "Unlock is idempotent")
	require.False(t, a.Locked())
	require.Equal(t, uint64(1), a.Term(), "Term keeps its value after Unlock")

	mustWin(t, b)
	require.Equal(t, uint64(2), b.Term())
	mustLose(t, a)
	require.NoError(t, b.Unlock())

	mustWin(t, a)
	require.Equal(t, uint64(3), a.Term())
	require.NoError(t, a.Unlock())

	// Terms live in the file, not in the Lock: new Lock objects continue the sequence.
	for want := uint64(4); want <= 6; want++ {
		c := lock.New(path)
		mustWin(t, c)
		require.Equal(t, want, c.Term())
		require.NoError(t, c.Unlock())
	}

	// Unlock never deletes the file, and the record stays readable.
	o, err = lock.ReadOwner(path)
	require.NoError(t, err)
	require.Equal(t, lock.Owner{Term: 6, PID: os.Getpid()}, lock.Owner{Term: o.Term, PID: o.PID})
	require.Equal(t, fmt.Sprintf("pid %d, term 6", os.Getpid()), o.String())
}

func TestHolderProcessKilled(t *testing.T) {
	path := lockPath(t)
	h, term := startHolder(t, path)
	require.Equal(t, uint64(1), term)

	l := lock.New(path)
	mustLose(t, l)
	o, err := lock.ReadOwner(path)
	require.NoError(t, err)
	require.Equal(t, lock.Owner{Term: term, PID: h.cmd.Process.Pid}, lock.Owner{Term: o.Term, PID: o.PID})

	// SIGKILL: nobody unlocks; the kernel releases the lock when the process's descriptors
	// close. The zombie is not reaped yet, so that is not what frees it.
	require.NoError(t, h.cmd.Process.Kill())
	deadline := time.Now().Add(10 * time.Second)
	for {
		won, err := l.TryLock()
		require.NoError(t, err)
		if won {
			break
		}
		require.True(t, time.Now().Before(deadline), "lock still held 10s after SIGKILL of its holder")
		time.Sleep(time.Millisecond)
	}
	t.Cleanup(func() { _ = l.Unlock() })
	require.Equal(t, term+1, l.Term())
	require.Error(t, h.wait(), "the helper was killed")

	o, err = lock.ReadOwner(path)
	require.NoError(t, err)
	require.Equal(t, lock.Owner{Term: term + 1, PID: os.Getpid()}, lock.Owner{Term: o.Term, PID: o.PID})

	// And back: a new process loses while we hold, then wins the next term once we release.
	busy := startHelper(t, "hold", path)
	require.Equal(t, "busy", busy.line)
	require.Error(t, busy.wait())
	require.NoError(t, l.Unlock())
	h2, term2 := startHolder(t, path)
	require.Equal(t, term+2, term2)

	// A holder that releases cleanly (its stdin closes) frees the lock for us at once.
	require.NoError(t, h2.stdin.Close())
	require.NoError(t, h2.wait())
	mustWin(t, l)
	require.Equal(t, term+3, l.Term())
}

func TestDeletedWhileHeld(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows cannot delete an open file, so this race cannot happen there")
	}
	path := lockPath(t)
	a := lock.New(path)
	mustWin(t, a)
	require.NoError(t, a.Verify())

	require.NoError(t, os.Remove(path))
	require.ErrorIs(t, a.Verify(), lock.ErrReplaced)
	require.True(t, a.Locked(), "a still holds its lock, on an inode nobody else can open")

	// The next member creates a new file at the path and wins a lock of its own: two members
	// now both "hold the lock", and the term sequence restarted. This is why nothing may ever
	// delete the lock file: not Unlock, not a cleanup job, not a human.
	b := lock.New(path)
	mustWin(t, b)
	require.Equal(t, uint64(1), b.Term())
	require.NoError(t, b.Verify())
	_, err := os.Stat(path)
	require.NoError(t, err, "TryLock recreated the file")
}

func TestCorruptRecord(t *testing.T) {
	path := lockPath(t)
	const junk = "not a lock record\n"
	require.NoError(t, os.WriteFile(path, []byte(junk), 0o600))
	l := lock.New(path)
	won, err := l.TryLock()
	require.False(t, won)
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, "does not hold a lock record")
	require.False(t, l.Locked(), "a failed TryLock must release the lock")
	require.Zero(t, l.Term())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, junk, string(b), "TryLock must not guess a term over a record it cannot read")

	_, err = lock.ReadOwner(path)
	require.ErrorContains(t, err, "does not hold a lock record")
}

func TestReadOwner(t *testing.T) {
	path := lockPath(t)
	_, err := lock.ReadOwner(path)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, path)

	// A file nobody won yet (a member crashed between create and write) has no owner.
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	o, err := lock.ReadOwner(path)
	require.NoError(t, err)
	require.Equal(t, lock.Owner{}, o)
	require.Equal(t, "no recorded holder", o.String())

	l := lock.New(path)
	mustWin(t, l)
	o, err = lock.ReadOwner(path)
	require.NoError(t, err, "ReadOwner works while the lock is held")
	require.Equal(t, 1, int(o.Term))
	require.Equal(t, os.Getpid(), o.PID)
}

func TestIsUnsupported(t *testing.T) {
	wrap := func(err error) error {
		return fmt.Errorf("lock: x: %w", &fs.PathError{Op: "flock", Path: "/x", Err: err})
	}
	for _, err := range []error{
		errors.ErrUnsupported,
		wrap(errors.ErrUnsupported),
		wrap(syscall.ENOLCK),
		wrap(syscall.EOPNOTSUPP),
		wrap(syscall.ENOSYS),
	} {
		if runtime.GOOS == "windows" && errors.Is(err, syscall.ENOLCK) {
			continue // flock errnos do not occur on Windows
		}
		require.True(t, lock.IsUnsupported(err), "%v", err)
	}
	for _, err := range []error{nil, errors.New("x"), wrap(syscall.EACCES), wrap(syscall.EWOULDBLOCK), lock.ErrReplaced} {
		require.False(t, lock.IsUnsupported(err), "%v", err)
	}
}

func TestFSKind(t *testing.T) {
	name, network, err := lock.FSKind(tempDir(t))
	require.NoError(t, err)
	require.False(t, network, "a temporary directory on a network filesystem (%s)?", name)
	if runtime.GOOS == "linux" {
		require.NotEmpty(t, name)
		_, _, err = lock.FSKind(filepath.Join(tempDir(t), "missing"))
		require.ErrorIs(t, err, fs.ErrNotExist)
	} else {
		require.Empty(t, name)
	}
}

func TestDefaultDirXDG(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows ignores XDG_RUNTIME_DIR")
	}
	fallback := filepath.Join(os.TempDir(), fmt.Sprintf("cluster-%d", os.Geteuid()))
	xdg := tempDir(t) // 0700, ours
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	require.Equal(t, filepath.Join(xdg, "cluster"), lock.DefaultDir())
	require.NoError(t, lock.PrepareDir(lock.DefaultDir(), true, lock.Share{}))

	for _, bad := range []string{"", "relative/dir", filepath.Join(xdg, "missing")} {
		t.Setenv("XDG_RUNTIME_DIR", bad)
		require.Equal(t, fallback, lock.DefaultDir(), "XDG_RUNTIME_DIR=%q", bad)
	}
	require.NoError(t, os.Chmod(xdg, 0o777))
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	require.Equal(t, fallback, lock.DefaultDir(), "a world-writable XDG_RUNTIME_DIR is not usable")
}

//go:build linux

package lock_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster/lock"
)

// fdsOn returns this process's descriptors open on path, from /proc/self/fd.
func fdsOn(t *testing.T, path string) []int {
	t.Helper()
	real, err := filepath.EvalSymlinks(filepath.Dir(path))
	require.NoError(t, err)
	want := filepath.Join(real, filepath.Base(path))
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	var fds []int
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		if target == want || target == want+" (deleted)" {
			fd, err := strconv.Atoi(e.Name())
			require.NoError(t, err)
			fds = append(fds, fd)
		}
	}
	return fds
}

func TestHeldFDIsCloseOnExec(t *testing.T) {
	path := lockPath(t)
	l := lock.New(path)
	mustWin(t, l)
	fds := fdsOn(t, path)
	require.Len(t, fds, 1, "only the held descriptor stays open (the record's is closed)")
	flags, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0)
	require.NoError(t, err)
	require.NotZero(t, flags&unix.FD_CLOEXEC, "the lock descriptor lacks FD_CLOEXEC: an exec'd child would keep the lock")
}

func TestNoDescriptorLeaks(t *testing.T) {
	path := lockPath(t)
	holder := lock.New(path)
	mustWin(t, holder)
	l := lock.New(path)
	for range 100 {
		mustLose(t, l)
	}
	require.Len(t, fdsOn(t, path), 1, "losing TryLocks left descriptors open")
	require.NoError(t, holder.Unlock())
	require.Empty(t, fdsOn(t, path), "Unlock left the descriptor open")
	for range 10 {
		mustWin(t, l)
		require.NoError(t, l.Unlock())
	}
	require.Empty(t, fdsOn(t, path))
}

package lock

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// skipOnWindows skips tests that delete or rename over an open file: Windows refuses both
// (Go opens files without FILE_SHARE_DELETE), which is also why those races cannot happen there.
func skipOnWindows(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("Windows cannot delete or rename over an open file")
	}
}

func tempPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "test.lock")
}

// replaceWith makes path name a new file holding rec, by rename: the old inode, which the
// caller may have locked, stays alive without a name.
func replaceWith(t *testing.T, path string, rec Owner) {
	t.Helper()
	tmp := path + ".new"
	require.NoError(t, os.WriteFile(tmp, rec.record(), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func TestReplacedBetweenLockAndCheck(t *testing.T) {
	skipOnWindows(t)
	path := tempPath(t)
	l := New(path)
	calls := 0
	l.afterLock = func() {
		calls++
		if calls == 1 {
			replaceWith(t, path, Owner{Term: 41, PID: 1})
		}
	}
	won, err := l.TryLock()
	require.NoError(t, err)
	require.True(t, won)
	t.Cleanup(func() { _ = l.Unlock() })
	require.Equal(t, 2, calls, "one retry after the replacement")
	require.Equal(t, uint64(42), l.Term(), "the term comes from the file now at the path")
	require.NoError(t, l.Verify())

	// The lock is on the new file: another member conflicts with it.
	other := New(path)
	won, err = other.TryLock()
	require.NoError(t, err)
	require.False(t, won)
}

func TestDeletedBetweenLockAndCheck(t *testing.T) {
	skipOnWindows(t)
	path := tempPath(t)
	l := New(path)
	mustTake(t, l) // term 1
	require.NoError(t, l.Unlock())
	calls := 0
	l.afterLock = func() {
		calls++
		if calls == 1 {
			require.NoError(t, os.Remove(path))
		}
	}
	mustTake(t, l)
	require.Equal(t, 2, calls)
	require.Equal(t, uint64(1), l.Term(), "a deleted file takes its terms with it")
}

func TestReplacedEveryTime(t *testing.T) {
	skipOnWindows(t)
	path := tempPath(t)
	l := New(path)
	calls := 0
	l.afterLock = func() {
		calls++
		replaceWith(t, path, Owner{Term: uint64(calls), PID: 1})
	}
	won, err := l.TryLock()
	require.False(t, won)
	require.ErrorIs(t, err, ErrReplaced)
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, fmt.Sprintf("after %d attempts", maxAttempts))
	require.Equal(t, maxAttempts, calls)
	require.False(t, l.Locked(), "the lock on the replaced file was released")
	require.Zero(t, l.Term())

	o, err := ReadOwner(path)
	require.NoError(t, err)
	require.Equal(t, Owner{Term: maxAttempts, PID: 1}, o, "the file now at the path was not written")
}

func TestReplacedBySymlinkBetweenLockAndCheck(t *testing.T) {
	skipOnWindows(t)
	path := tempPath(t)
	target := filepath.Join(filepath.Dir(path), "target")
	l := New(path)
	l.afterLock = func() {
		_ = os.Remove(path)
		require.NoError(t, os.Symlink(target, path))
	}
	won, err := l.TryLock()
	require.False(t, won)
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, "symbolic link")
	require.False(t, l.Locked())
	_, err = os.Lstat(target)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestSameFile(t *testing.T) {
	skipOnWindows(t)
	path := tempPath(t)
	l := New(path)
	mustTake(t, l)
	held, err := l.fl.Stat()
	require.NoError(t, err)
	require.NoError(t, sameFile(path, held))

	replaceWith(t, path, Owner{})
	err = sameFile(path, held)
	require.ErrorIs(t, err, ErrReplaced)
	require.ErrorContains(t, err, "another file")
	require.ErrorIs(t, l.Verify(), ErrReplaced)

	require.NoError(t, os.Remove(path))
	require.NoError(t, os.Mkdir(path, 0o700))
	require.ErrorContains(t, sameFile(path, held), "not a regular file")
	require.NoError(t, os.Remove(path))
	require.ErrorContains(t, sameFile(path, held), "no longer exists")

	require.NoError(t, l.Unlock())
	require.ErrorContains(t, l.Verify(), "not held")
}

func TestRecord(t *testing.T) {
	for _, o := range []Owner{{Term: 1, PID: 2}, {Term: math.MaxUint64, PID: math.MaxInt, Start: math.MaxUint64, PIDNS: math.MaxUint64}, {}} {
		b := o.record()
		require.Len(t, b, recordSize)
		require.Equal(t, byte('\n'), b[recordSize-1])
		got, err := parseRecord(b)
		require.NoError(t, err)
		require.Equal(t, o, got)
	}
	require.Equal(t, "term=7 pid=1234", strings.TrimSpace(string(Owner{Term: 7, PID: 1234}.record())))

	for in, want := range map[string]Owner{
		"":                                {},
		"\x00\x00\x00":                    {},
		"   \n":                           {},
		"term=3 pid=9\n":                  {Term: 3, PID: 9},
		"term=3 pid=9":                    {Term: 3, PID: 9},
		"pid=9 term=3 host=a\n":           {Term: 3, PID: 9},
		"term=3 pid=9   \nleftover\n":     {Term: 3, PID: 9},
		"\x00term=3 pid=9\n":              {Term: 3, PID: 9},
		"term=18446744073709551615 pid=1": {Term: math.MaxUint64, PID: 1},
		"term=3 pid=9 start=77 pidns=4026531836\n": {Term: 3, PID: 9, Start: 77, PIDNS: 4026531836},
	} {
		got, err := parseRecord([]byte(in))
		require.NoError(t, err, "%q", in)
		require.Equal(t, want, got, "%q", in)
	}
	for _, in := range []string{"hello", "term=3", "pid=3", "term=x pid=1", "term=1 pid=-1", "term=-1 pid=1", "term=18446744073709551616 pid=1", "term=1 pid=1 start=x"} {
		_, err := parseRecord([]byte(in))
		require.Error(t, err, "%q", in)
	}
}

func TestTermOverflow(t *testing.T) {
	path := tempPath(t)
	require.NoError(t, os.WriteFile(path, Owner{Term: math.MaxUint64, PID: 1}.record(), 0o600))
	l := New(path)
	won, err := l.TryLock()
	require.False(t, won)
	require.ErrorContains(t, err, "cannot be incremented")
	require.False(t, l.Locked())
}

func mustTake(t *testing.T, l *Lock) {
	t.Helper()
	won, err := l.TryLock()
	require.NoError(t, err)
	require.True(t, won)
	t.Cleanup(func() { _ = l.Unlock() })
}

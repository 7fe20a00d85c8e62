//go:build unix

package lock_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/lock"
)

func TestSymlinkAtLockPath(t *testing.T) {
	dir := tempDir(t)
	target := filepath.Join(dir, "target")
	path := filepath.Join(dir, "test.lock")
	require.NoError(t, os.Symlink(target, path))

	// A dangling link: following it would create the target.
	won, err := lock.New(path).TryLock()
	require.False(t, won)
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, "symbolic link")
	require.False(t, lock.IsUnsupported(err))
	_, err = os.Lstat(target)
	require.ErrorIs(t, err, fs.ErrNotExist, "TryLock created the symlink's target")

	// A link to an existing file: following it would lock and overwrite the file.
	const precious = "precious\n"
	require.NoError(t, os.WriteFile(target, []byte(precious), 0o600))
	won, err = lock.New(path).TryLock()
	require.False(t, won)
	require.ErrorContains(t, err, path)
	b, err := os.ReadFile(target)
	require.NoError(t, err)
	require.Equal(t, precious, string(b), "TryLock wrote through the symlink")

	_, err = lock.ReadOwner(path)
	require.ErrorContains(t, err, path)
	require.ErrorContains(t, err, "symbolic link")
}

func TestLockFileMode(t *testing.T) {
	path := lockPath(t)
	mustWin(t, lock.New(path))
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular())
	require.Zero(t, fi.Mode().Perm()&^0o600, "lock file mode %v, want at most 0600", fi.Mode())
	require.NotZero(t, fi.Size(), "the record is written")
}

func TestPrepareDirCreates(t *testing.T) {
	base := tempDir(t)
	dir := filepath.Join(base, "a", "b", "c")
	require.NoError(t, lock.PrepareDir(dir, true, false))
	for _, d := range []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b"), dir} {
		fi, err := os.Lstat(d)
		require.NoError(t, err)
		require.True(t, fi.IsDir())
		require.Equal(t, fs.FileMode(0o700), fi.Mode().Perm(), "%s", d)
	}
	require.NoError(t, lock.PrepareDir(dir, true, false), "PrepareDir on a good existing dir")
	require.NoError(t, lock.PrepareDir(dir+"/", false, false))

	missing := filepath.Join(base, "missing")
	err := lock.PrepareDir(missing, false, false)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, missing)
	_, err = os.Lstat(missing)
	require.ErrorIs(t, err, fs.ErrNotExist, "PrepareDir created a dir with create=false")
}

func TestPrepareDirRefuses(t *testing.T) {
	base := tempDir(t)
	mkdir := func(name string, mode fs.FileMode) string {
		d := filepath.Join(base, name)
		require.NoError(t, os.Mkdir(d, 0o700))
		require.NoError(t, os.Chmod(d, mode)) // chmod: Mkdir's mode is cut by the umask
		return d
	}
	good := mkdir("good", 0o700)
	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(good, link))
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	world := mkdir("world", 0o777)
	sticky := mkdir("sticky", 0o777|fs.ModeSticky)
	group := mkdir("group", 0o770)

	for _, tc := range []struct {
		dir        string
		allowGroup bool
		says       string
	}{
		{link, false, "symbolic link"},
		{link + "/", false, "symbolic link"},
		{file, false, "not a directory"},
		{world, false, "chmod o-w " + world},
		{world, true, "chmod o-w " + world},
		{sticky, false, "writable by other users"},
		{group, false, "chmod g-w " + group},
	} {
		err := lock.PrepareDir(tc.dir, true, tc.allowGroup)
		require.ErrorIs(t, err, lock.ErrUnsafeDir, "%s", tc.dir)
		require.ErrorContains(t, err, strings.TrimSuffix(tc.dir, "/"))
		require.ErrorContains(t, err, tc.says)
	}
	require.NoError(t, lock.PrepareDir(group, false, true), "group-writable with allowGroup")

	// The refusals changed nothing.
	fi, err := os.Lstat(world)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o777), fi.Mode().Perm())
	fi, err = os.Lstat(link)
	require.NoError(t, err)
	require.NotZero(t, fi.Mode()&fs.ModeSymlink)
}

func TestPrepareDirOtherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown a directory to another uid")
	}
	dir := filepath.Join(tempDir(t), "theirs")
	require.NoError(t, os.Mkdir(dir, 0o700)) // private, so only the owner is wrong
	require.NoError(t, os.Chown(dir, 65534, 65534))
	err := lock.PrepareDir(dir, true, true)
	require.ErrorIs(t, err, lock.ErrUnsafeDir)
	require.ErrorContains(t, err, dir)
	require.ErrorContains(t, err, "owned by uid 65534")
	require.ErrorContains(t, err, "use a Dir you own")
}

// TestPrepareDirRootOwned runs without root too: "/" is (nearly always) root's, 0755.
func TestPrepareDirRootOwned(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root owns \"/\"; TestPrepareDirOtherOwner covers root")
	}
	fi, err := os.Lstat("/")
	require.NoError(t, err)
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) == os.Geteuid() {
		t.Skip("this user owns \"/\"")
	}
	err = lock.PrepareDir("/", false, true)
	require.ErrorIs(t, err, lock.ErrUnsafeDir)
	require.ErrorContains(t, err, "use a Dir you own")
}

func TestUnsupportedErrnos(t *testing.T) {
	for _, e := range []syscall.Errno{syscall.ENOLCK, syscall.EOPNOTSUPP, syscall.ENOTSUP, syscall.ENOSYS} {
		require.True(t, lock.IsUnsupported(&fs.PathError{Op: "flock", Path: "x", Err: e}), "%v", e)
	}
}

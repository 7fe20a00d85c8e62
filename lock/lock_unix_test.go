//go:build unix

package lock_test

import (
	"fmt"
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
	require.NoError(t, lock.PrepareDir(dir, true, lock.Share{}))
	for _, d := range []string{filepath.Join(base, "a"), filepath.Join(base, "a", "b"), dir} {
		fi, err := os.Lstat(d)
		require.NoError(t, err)
		require.True(t, fi.IsDir())
		require.Equal(t, fs.FileMode(0o700), fi.Mode().Perm(), "%s", d)
	}
	require.NoError(t, lock.PrepareDir(dir, true, lock.Share{}), "PrepareDir on a good existing dir")
	require.NoError(t, lock.PrepareDir(dir+"/", false, lock.Share{}))

	missing := filepath.Join(base, "missing")
	err := lock.PrepareDir(missing, false, lock.Share{})
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
	groupSticky := mkdir("gsticky", 0o770|fs.ModeSticky)
	fi, err := os.Lstat(group)
	require.NoError(t, err)
	gid := fi.Sys().(*syscall.Stat_t).Gid
	shared := lock.Share{GIDs: []uint32{gid}}
	other := lock.Share{GIDs: []uint32{gid + 1}}

	for _, tc := range []struct {
		dir   string
		share lock.Share
		says  string
		also  error
	}{
		{link, lock.Share{}, "symbolic link", nil},
		{link + "/", lock.Share{}, "symbolic link", nil},
		{file, lock.Share{}, "not a directory", nil},
		{world, lock.Share{}, "chmod o-w " + world, nil},
		{world, shared, "chmod o-w " + world, nil},
		{sticky, lock.Share{}, "writable by other users", nil},
		{group, lock.Share{}, "chmod g-w " + group, lock.ErrDirGroup},
		{group, other, fmt.Sprintf("allow gid %d", gid), lock.ErrDirGroup},
		{groupSticky, shared, "chmod -t " + groupSticky, lock.ErrDirGroup},
	} {
		err := lock.PrepareDir(tc.dir, true, tc.share)
		require.ErrorIs(t, err, lock.ErrUnsafeDir, "%s", tc.dir)
		if tc.also != nil {
			require.ErrorIs(t, err, tc.also, "%s", tc.dir)
		}
		require.ErrorContains(t, err, strings.TrimSuffix(tc.dir, "/"))
		require.ErrorContains(t, err, tc.says)
	}
	require.NoError(t, lock.PrepareDir(group, false, shared), "group-writable by an allowed group")

	// The refusals changed nothing.
	fi, err = os.Lstat(world)
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
	require.NoError(t, os.Chown(dir, 65534, 65533))
	err := lock.PrepareDir(dir, true, lock.Share{GIDs: []uint32{1234}})
	require.ErrorIs(t, err, lock.ErrUnsafeDir)
	require.ErrorIs(t, err, lock.ErrDirOwner)
	require.ErrorContains(t, err, dir)
	require.ErrorContains(t, err, "owned by uid 65534")
	require.ErrorContains(t, err, "use a Dir you own")

	// A trusted owner, or a directory of an allowed group, is accepted.
	require.NoError(t, lock.PrepareDir(dir, false, lock.Share{UIDs: []uint32{65534}}))
	require.NoError(t, lock.PrepareDir(dir, false, lock.Share{GIDs: []uint32{65533}}))
}

// TestPrepareDirRootOwned runs without root too: "/" is (nearly always) root's, 0755, and
// root, who can replace anything anyway, is trusted (as OpenSSH's safe_path does).
func TestPrepareDirRootOwned(t *testing.T) {
	fi, err := os.Lstat("/")
	require.NoError(t, err)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		t.Skip("\"/\" is not root's, or is writable by others than root")
	}
	require.NoError(t, lock.PrepareDir("/", false, lock.Share{}))
}

func TestPrepareDirCreatesShared(t *testing.T) {
	base := tempDir(t)
	fi, err := os.Lstat(base)
	require.NoError(t, err)
	gid := fi.Sys().(*syscall.Stat_t).Gid // a group this process has (its own)
	dir := filepath.Join(base, "a", "b")
	share := lock.Share{GIDs: []uint32{gid}}
	require.NoError(t, lock.PrepareDir(dir, true, share))
	for _, d := range []string{filepath.Join(base, "a"), dir} {
		fi, err := os.Lstat(d)
		require.NoError(t, err)
		require.Equal(t, fs.FileMode(0o770), fi.Mode().Perm(), "%s", d)
		require.NotZero(t, fi.Mode()&fs.ModeSetgid, "%s is not set-group-ID", d)
		require.Equal(t, gid, fi.Sys().(*syscall.Stat_t).Gid, "%s", d)
	}
	require.Equal(t, int(gid), lock.SharedGID(dir, share))
	require.Equal(t, -1, lock.SharedGID(dir, lock.Share{}))
	require.Equal(t, -1, lock.SharedGID(dir, lock.Share{GIDs: []uint32{gid + 1}}))
}

func TestUnsupportedErrnos(t *testing.T) {
	for _, e := range []syscall.Errno{syscall.ENOLCK, syscall.EOPNOTSUPP, syscall.ENOTSUP, syscall.ENOSYS} {
		require.True(t, lock.IsUnsupported(&fs.PathError{Op: "flock", Path: "x", Err: e}), "%v", e)
	}
}

func TestSharedLockFileModeAndGroup(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := tempDir(t)
	gid := uint32(os.Getegid())
	if os.Geteuid() == 0 {
		gid = 2345 // root may give a file any group
		require.NoError(t, os.Chown(dir, -1, int(gid)))
	}
	share := lock.Share{GIDs: []uint32{gid}}
	path := filepath.Join(dir, "s.lock")
	mustWin(t, lock.NewShared(path, share))
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o660), fi.Mode().Perm(), "the umask cut the shared lock file's mode")
	require.Equal(t, gid, fi.Sys().(*syscall.Stat_t).Gid, "the lock file is not in Dir's group")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 1, "a temporary file was left behind: %v", ents)

	// A lock file left 0600 by a private configuration is healed by its owner.
	private := filepath.Join(dir, "p.lock")
	l := lock.New(private)
	mustWin(t, l)
	require.NoError(t, l.Unlock())
	fi, err = os.Lstat(private)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
	mustWin(t, lock.NewShared(private, share))
	fi, err = os.Lstat(private)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o660), fi.Mode().Perm())
	require.Equal(t, gid, fi.Sys().(*syscall.Stat_t).Gid)
}

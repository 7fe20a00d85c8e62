package lock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// dirPerm is the mode of the directories PrepareDir creates (before the umask).
const dirPerm fs.FileMode = 0o700

// PrepareDir makes dir ready to hold the lock and the socket, like ssh-agent does for its
// directory. If dir does not exist and create is true, it is created with mode 0700, and so
// are missing parents. Then dir itself (not its parents) is checked without following a
// symbolic link: it must be a directory, not a symbolic link; owned by the effective uid; not
// writable by others; and not writable by its group unless allowGroup is true. Every refusal
// returns an error matching ErrUnsafeDir that names dir, what was found (owner uid, mode) and
// what to do. A missing dir with create false returns an error matching fs.ErrNotExist.
//
// PrepareDir never changes the mode or owner of an existing directory, and does not block
// beyond the filesystem calls. On Windows the owner and mode checks are skipped (Windows
// access control is not expressed in mode bits); the directory and symlink checks remain.
func PrepareDir(dir string, create, allowGroup bool) error {
	if dir == "" {
		return fmt.Errorf("%w: empty directory name; use a Dir you own", ErrUnsafeDir)
	}
	dir = filepath.Clean(dir) // "link/" would make Lstat follow the link
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err := os.MkdirAll(dir, dirPerm); err != nil {
			return fmt.Errorf("lock: creating directory %s: %w", dir, err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return fmt.Errorf("lock: directory %s: %w", dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := os.Readlink(dir)
		return fmt.Errorf("%w: %s is a symbolic link (to %q), which another user could redirect; use a Dir you own that is a real directory",
			ErrUnsafeDir, dir, target)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory (mode %v); use a Dir you own that is a directory",
			ErrUnsafeDir, dir, fi.Mode())
	}
	return checkOwner(dir, fi, allowGroup)
}

// modeString shows a mode both ways: "drwxrwxrwx (0777)".
func modeString(m fs.FileMode) string {
	return fmt.Sprintf("%v (%#o)", m, m.Perm())
}

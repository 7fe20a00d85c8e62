//go:build !unix

package lock

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
)

// openFlag is how gofrs/flock opens the lock file: read-write and created if missing.
// Windows has no O_NOFOLLOW; os.OpenFile makes the handle non-inheritable.
const openFlag = os.O_RDWR | os.O_CREATE

// recordFlag is added to every other open of the lock file (the record's).
const recordFlag = 0

// recordOffset is where the record starts in the lock file. gofrs/flock's LockFileEx locks
// byte 0, and Windows enforces byte-range locks on every other handle, including this
// process's own second handle and ReadOwner's: so the record starts at byte 1.
const recordOffset = 1

// errSymlinkErrno is the errno an O_NOFOLLOW open of a symbolic link fails with; there is no
// O_NOFOLLOW here, so isSymlinkError relies on looking at the path.
var errSymlinkErrno error

// unsupportedErrnos: on Windows and the other platforms, the unsupported cases all match
// errors.ErrUnsupported (ERROR_NOT_SUPPORTED, ERROR_CALL_NOT_IMPLEMENTED, gofrs/flock's
// stubs), which IsUnsupported checks first.
var unsupportedErrnos []error

// platformCheck refuses a symbolic link at path up front, since there is no O_NOFOLLOW.
// It cannot close the race with a link planted between this check and the open; the
// directory checks of PrepareDir are the real protection.
func platformCheck(path string) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("lock: %s is a symbolic link; refusing to follow it (remove the link: the lock file must be a regular file)", path)
	}
	return nil
}

// linkCount is unknown here: Windows does not let an open file be deleted unless it was
// opened for sharing deletes, which Go does not do.
func linkCount(fs.FileInfo) (uint64, bool) { return 0, false }

// checkOwner skips the owner and mode checks: Windows access control lives in ACLs, not in
// mode bits, and a directory under the user's profile (os.TempDir) is private by default.
func checkOwner(string, fs.FileInfo, Share) error { return nil }

// shareDir does nothing here: there are no groups in mode bits.
func shareDir(string, Share) {}

// ownedByMe is unknown here: nothing is healed.
func ownedByMe(fs.FileInfo) bool { return false }

// fileGID is unknown here.
func fileGID(fs.FileInfo) (uint32, bool) { return 0, false }

// fileOwner describes a file for an error message: here, its mode only.
func fileOwner(path string) string {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Sprintf("%s: %v", path, err)
	}
	return fmt.Sprintf("%s: mode %s", path, modeString(fi.Mode()))
}

// whoAmI describes this process for an error message.
func whoAmI() string { return "this process runs as user " + userName() }

// chownGroup does nothing here: access control lives in ACLs.
func chownGroup(*os.File, int, fs.FileMode) error { return nil }

// DefaultDir returns the per-user directory for the lock and the socket:
// os.TempDir()/cluster-<username> (the user's own temporary directory), with "user" when the
// username cannot be found. It does not create the directory and does not block.
func DefaultDir() string {
	return filepath.Join(os.TempDir(), "cluster-"+userName())
}

// userName returns the current user's name reduced to a safe path element.
func userName() string {
	u, err := user.Current()
	if err != nil {
		return "user"
	}
	name := u.Username
	if i := strings.LastIndexAny(name, `\/`); i >= 0 {
		name = name[i+1:] // DOMAIN\user
	}
	name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, name)
	if strings.Trim(name, "._") == "" {
		return "user"
	}
	return name
}

// CheckAccess is a no-op here: access control is not expressed in mode bits, and opening
// the lock file reports a refusal.
func CheckAccess(dir string, write bool, share Share) error { return nil }

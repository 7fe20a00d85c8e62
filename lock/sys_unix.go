//go:build unix

package lock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// openFlag is how gofrs/flock opens the lock file: read-write (flock over NFS needs write
// access, and the record is written), created if missing, never through a symbolic link.
// os.OpenFile adds O_CLOEXEC, so exec'd children never inherit the lock.
const openFlag = os.O_RDWR | os.O_CREATE | syscall.O_NOFOLLOW

// recordFlag is added to every other open of the lock file (the record's).
const recordFlag = syscall.O_NOFOLLOW

// recordOffset is where the record starts in the lock file.
const recordOffset = 0

// errSymlinkErrno is the errno an O_NOFOLLOW open of a symbolic link fails with on Linux and
// macOS; isSymlinkError also looks at the path for the BSDs' other errnos.
var errSymlinkErrno error = syscall.ELOOP

// unsupportedErrnos are the flock errnos that mean "no locking here" (ENOLCK: e.g. NFS
// mounted without a lock manager; EOPNOTSUPP/ENOTSUP: a filesystem without flock; ENOSYS).
var unsupportedErrnos = []error{syscall.ENOLCK, syscall.EOPNOTSUPP, syscall.ENOTSUP, syscall.ENOSYS}

// platformCheck refuses platforms where gofrs/flock uses fcntl record locks (AIX, Solaris):
// those belong to the process, so two members in one process do not conflict, and closing
// any descriptor of the file (as the record write does) drops them.
func platformCheck(path string) error {
	switch runtime.GOOS {
	case "aix", "solaris":
		return fmt.Errorf("lock: %s: gofrs/flock uses fcntl record locks on %s, which cannot carry the election: %w",
			path, runtime.GOOS, errors.ErrUnsupported)
	}
	return nil
}

// linkCount returns a file's number of hard links.
func linkCount(fi fs.FileInfo) (uint64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return uint64(st.Nlink), true
}

// checkOwner is PrepareDir's owner and mode check.
func checkOwner(dir string, fi fs.FileInfo, allowGroup bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: %s: cannot read its owner; use a Dir you own", ErrUnsafeDir, dir)
	}
	uid, euid, perm := int(st.Uid), os.Geteuid(), fi.Mode().Perm()
	switch {
	case uid != euid:
		return fmt.Errorf("%w: %s is owned by uid %d, not by this process's uid %d (mode %s); use a Dir you own",
			ErrUnsafeDir, dir, uid, euid, modeString(fi.Mode()))
	case perm&0o002 != 0:
		return fmt.Errorf("%w: %s is writable by other users (owner uid %d, mode %s); run \"chmod o-w %s\" or use a Dir you own",
			ErrUnsafeDir, dir, uid, modeString(fi.Mode()), dir)
	case perm&0o020 != 0 && !allowGroup:
		return fmt.Errorf("%w: %s is writable by its group gid %d (owner uid %d, mode %s); run \"chmod g-w %s\", allow that group, or use a Dir you own",
			ErrUnsafeDir, dir, st.Gid, uid, modeString(fi.Mode()), dir)
	}
	return nil
}

// DefaultDir returns the per-user runtime directory for the lock and the socket:
// $XDG_RUNTIME_DIR/cluster when XDG_RUNTIME_DIR is set and usable (an absolute path to a
// directory owned by the effective uid, not writable by others, that this process can write
// and search), else filepath.Join(os.TempDir(), "cluster-<euid>"). It does not create the
// directory (PrepareDir does) and does not block beyond a stat.
func DefaultDir() string {
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" && usableRuntimeDir(x) {
		return filepath.Join(x, "cluster")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("cluster-%d", os.Geteuid()))
}

// usableRuntimeDir reports whether dir may serve as XDG_RUNTIME_DIR for this process.
func usableRuntimeDir(dir string) bool {
	if !filepath.IsAbs(dir) {
		return false
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) != os.Geteuid() || fi.Mode().Perm()&0o022 != 0 {
		return false
	}
	return unix.Access(dir, unix.W_OK|unix.X_OK) == nil
}

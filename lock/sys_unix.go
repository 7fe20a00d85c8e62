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
func checkOwner(dir string, fi fs.FileInfo, share Share) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: %s: cannot read its owner; use a Dir you own", ErrUnsafeDir, dir)
	}
	uid, gid, euid, mode := st.Uid, st.Gid, uint32(os.Geteuid()), fi.Mode()
	perm := mode.Perm()
	what := fmt.Sprintf("owner uid %d, group gid %d, mode %s", uid, gid, modeString(mode))
	trusted := uid == euid || uid == 0 || share.hasUID(uid) || share.hasGID(gid)
	switch {
	case !trusted:
		return fmt.Errorf("%w: %w: %s is owned by uid %d, not by this process's uid %d (%s); use a Dir you own, "+
			"or share it with a group of both users (chgrp GID %s; chmod 2770 %s) and allow that group, or trust uid %d",
			ErrUnsafeDir, ErrDirOwner, dir, uid, euid, what, dir, dir, uid)
	case perm&0o002 != 0:
		return fmt.Errorf("%w: %s is writable by other users (%s); run \"chmod o-w %s\" or use a Dir you own",
			ErrUnsafeDir, dir, what, dir)
	case perm&0o020 != 0 && !share.hasGID(gid):
		return fmt.Errorf("%w: %w: %s is writable by its group gid %d (%s); allow gid %d if its members may share this cluster, "+
			"or run \"chmod g-w %s\", or use a Dir you own", ErrUnsafeDir, ErrDirGroup, dir, gid, what, gid, dir)
	case perm&0o020 != 0 && mode&fs.ModeSticky != 0:
		return fmt.Errorf("%w: %w: %s is group-writable and sticky (%s): a new Leader of another uid could not replace a dead "+
			"Leader's socket or token; run \"chmod -t %s\"", ErrUnsafeDir, ErrDirGroup, dir, what, dir)
	}
	return nil
}

// shareDir gives a directory PrepareDir just created to the first group of share.GIDs this
// process may give it (it keeps a set-group-ID parent's group if that one is listed), and
// makes it 2770. If no listed group can be given, the directory stays private (0700).
func shareDir(dir string, share Share) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return
	}
	gid, ok := fileGID(fi)
	if !ok {
		return
	}
	if !share.hasGID(gid) {
		given := false
		for _, g := range share.GIDs {
			if os.Lchown(dir, -1, int(g)) == nil {
				given = true
				break
			}
		}
		if !given {
			return
		}
	}
	_ = os.Chmod(dir, sharedDirPerm) // chmod: Mkdir's mode is cut by the umask
}

// ownedByMe reports whether the effective uid owns a file.
func ownedByMe(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// fileGID returns a file's group.
func fileGID(fi fs.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Gid, true
}

// fileOwner describes a file's owner, group and mode for an error message.
func fileOwner(path string) string {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Sprintf("%s: %v", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Sprintf("%s: mode %s", path, modeString(fi.Mode()))
	}
	return fmt.Sprintf("%s: owner uid %d, group gid %d, mode %s", path, st.Uid, st.Gid, modeString(fi.Mode()))
}

// whoAmI describes this process's credentials for an error message.
func whoAmI() string {
	groups, _ := os.Getgroups()
	return fmt.Sprintf("this process runs as uid %d, gid %d, groups %v", os.Geteuid(), os.Getegid(), groups)
}

// chownGroup gives f to group gid (-1: leave it), and sets its mode exactly, past the umask.
func chownGroup(f *os.File, gid int, perm fs.FileMode) error {
	if gid >= 0 {
		if err := f.Chown(-1, gid); err != nil {
			return err
		}
	}
	return f.Chmod(perm)
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

// CheckAccess reports, with an error matching ErrDirAccess that says who owns dir and
// what to do, whether this process (its effective uid and groups) may search dir and,
// when write is true, create files in it. It checks dir itself, not its parents: a parent
// it cannot search makes the stat fail, which is reported the same way. share is whom
// the members share dir with: when dir belongs to one of its groups and this process is
// not in it, the error says that this is what is missing.
func CheckAccess(dir string, write bool, share Share) error {
	mode, verb := uint32(unix.X_OK), "reach the files in"
	need := "search permission"
	if write {
		mode, verb, need = unix.W_OK|unix.X_OK, "create the lock file and the socket in", "write and search permission"
	}
	err := unix.Faccessat(unix.AT_FDCWD, dir, mode, unix.AT_EACCESS)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("lock: directory %s: %w", dir, fs.ErrNotExist)
	}
	fix := "run the member as a user who may, or point Dir at a directory this user owns (the default Dir is per user)"
	if fi, serr := os.Stat(dir); serr == nil {
		if gid, ok := fileGID(fi); ok && share.hasGID(gid) && !inGroup(gid) {
			fix = fmt.Sprintf("this process must belong to group %d, the group Config.AllowGIDs %v shares Dir with: run it with that group (primary or supplementary)", gid, share.GIDs)
		}
	}
	return fmt.Errorf("%w: this process may not %s %s (it needs %s): %s; %s (%v): %s",
		ErrDirAccess, verb, dir, need, fileOwner(dir), whoAmI(), err, fix)
}

// inGroup reports whether gid is this process's effective group or one of its
// supplementary groups.
func inGroup(gid uint32) bool {
	if uint32(os.Getegid()) == gid {
		return true
	}
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if uint32(g) == gid {
			return true
		}
	}
	return false
}

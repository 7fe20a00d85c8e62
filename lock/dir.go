package lock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// dirPerm is the mode of the private directories PrepareDir creates (before the umask).
const dirPerm fs.FileMode = 0o700

// sharedDirPerm is the mode PrepareDir gives a directory it creates for a group (Share.GIDs):
// group-writable and set-group-ID, so that every file created in it gets the group.
const sharedDirPerm = 0o770 | fs.ModeSetgid

// Share says who, besides the effective uid, may share a directory and the files in it. The
// zero Share is private: only the effective uid.
//
// Members of a cluster that run as different uids (containers on one shared volume, say)
// share a group: list its gid in GIDs on every member. PrepareDir then accepts a directory
// writable by that group, and a Lock made with NewShared creates its file 0660 in that
// group, so that every member can open it.
type Share struct {
	// UIDs are users trusted besides the effective uid and root: PrepareDir accepts a
	// directory one of them owns.
	UIDs []uint32
	// GIDs are groups whose members may share the directory. PrepareDir accepts a directory
	// whose group is listed, whoever owns it (any member of a group that may write a
	// directory can replace the files in it anyway, so the group is the trust boundary),
	// and lets it be writable by that group.
	GIDs []uint32
}

// private reports whether s shares with nobody.
func (s Share) private() bool { return len(s.UIDs) == 0 && len(s.GIDs) == 0 }

func (s Share) hasGID(gid uint32) bool { return slices.Contains(s.GIDs, gid) }
func (s Share) hasUID(uid uint32) bool { return slices.Contains(s.UIDs, uid) }

// SharedGID returns the group with which files created in dir must be shared: dir's own
// group when s lists it, else -1 (no group: files stay private to their owner). It does
// not block beyond a stat, and returns -1 when dir cannot be read or on Windows.
func SharedGID(dir string, s Share) int {
	if len(s.GIDs) == 0 {
		return -1
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return -1
	}
	if gid, ok := fileGID(fi); ok && s.hasGID(gid) {
		return int(gid)
	}
	return -1
}

// PrepareDir makes dir ready to hold the lock and the socket, like ssh-agent does for its
// directory. If dir does not exist and create is true, it is created with its missing
// parents: mode 0700, or, when share lists groups, 2770 (group-writable and set-group-ID)
// with the first listed group this process may give it (a parent's set-group-ID group
// counts). Then dir itself (not its parents) is checked without following a symbolic link:
//
//   - it must be a directory, not a symbolic link;
//   - it must be owned by the effective uid, by root, by a uid in share.UIDs, or belong to
//     a group in share.GIDs (else the error also matches ErrDirOwner);
//   - it must not be writable by others;
//   - it may be writable by its group only if share.GIDs lists that group (else the error
//     also matches ErrDirGroup), and then not sticky: a sticky directory would stop a new
//     Leader of another uid from replacing a dead Leader's socket.
//
// Every refusal returns an error matching ErrUnsafeDir that names dir, what was found (owner
// uid, group, mode) and what to do. A missing dir with create false returns an error
// matching fs.ErrNotExist.
//
// PrepareDir never changes the mode or owner of an existing directory, and does not block
// beyond the filesystem calls. On Windows the owner and mode checks are skipped (Windows
// access control is not expressed in mode bits); the directory and symlink checks remain.
func PrepareDir(dir string, create bool, share Share) error {
	if dir == "" {
		return fmt.Errorf("%w: empty directory name; use a Dir you own", ErrUnsafeDir)
	}
	dir = filepath.Clean(dir) // "link/" would make Lstat follow the link
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err := mkdirAll(dir, share); err != nil {
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
	return checkOwner(dir, fi, share)
}

// mkdirAll creates dir and its missing parents, each private, or group-shared when share
// lists groups.
func mkdirAll(dir string, share Share) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, dirPerm); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue // another member made it first; PrepareDir checks the result
			}
			return err
		}
		if len(share.GIDs) > 0 {
			shareDir(d, share)
		}
	}
	return nil
}

// modeString shows a mode both ways: "drwxrwxrwx (0777)", or "dgrwxrws--- (02770)".
func modeString(m fs.FileMode) string {
	bits := m.Perm()
	if m&fs.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	return fmt.Sprintf("%v (%#o)", m, uint32(bits))
}

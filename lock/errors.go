package lock

import (
	"errors"
)

// ErrReplaced reports that the lock file was deleted, or its path made to name another file,
// while a member was locking it or holding it. TryLock retries a few times before it returns
// an error matching ErrReplaced; Verify returns one as soon as it sees the change.
var ErrReplaced = errors.New("lock: lock file was deleted or replaced while locked")

// ErrUnsafeDir reports that a directory fails PrepareDir's checks: it is a symbolic link, not
// a directory, owned by another user, or writable by others (or by its group, unless allowed).
var ErrUnsafeDir = errors.New("lock: unsafe directory")

// ErrDirOwner is matched, besides ErrUnsafeDir, by PrepareDir's refusal of a directory owned
// by a user it does not trust (not the effective uid, not root, not in Share.UIDs) and not
// belonging to a group in Share.GIDs.
var ErrDirOwner = errors.New("lock: directory owned by an untrusted user")

// ErrDirGroup is matched, besides ErrUnsafeDir, by PrepareDir's refusal of a directory that
// its group may write when Share.GIDs does not list that group, or that is sticky while its
// group may write it.
var ErrDirGroup = errors.New("lock: directory shared with a group that is not allowed")

// ErrDirAccess reports that this process may not use a directory as it needs to: create
// files in it (a member that may lead), or reach a socket in it (any member). See
// CheckAccess.
var ErrDirAccess = errors.New("lock: directory not accessible")

// IsUnsupported reports whether err says that file locking is not available here: flock
// returned ENOLCK, EOPNOTSUPP, ENOTSUP or ENOSYS, the platform has no locking (an error
// matching errors.ErrUnsupported), or gofrs/flock's locks on this platform cannot carry the
// election (AIX, Solaris). A caller that sees it should elect by other means (TCP). It does
// not block and reports false for nil.
func IsUnsupported(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errors.ErrUnsupported) {
		return true
	}
	for _, e := range unsupportedErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

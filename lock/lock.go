package lock

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"

	"github.com/gofrs/flock"
)

// maxAttempts bounds how often TryLock retries when it wins the lock on a file that was
// deleted or replaced in the meantime. A few is plenty: each retry opens the current file.
const maxAttempts = 5

// filePerm is the mode of a lock file TryLock creates (before the umask).
const filePerm fs.FileMode = 0o600

// sharedFilePerm is the exact mode of a lock file a Lock made by NewShared creates: every
// member of the group must open it read-write.
const sharedFilePerm fs.FileMode = 0o660

// Lock is one member's handle on the election lock file. It is not safe for concurrent use:
// one goroutine (the member's election loop) owns it. Two Locks on the same path in one
// process do conflict (flock belongs to the open file description), which is how tests run
// several members in one process.
type Lock struct {
	path  string
	fl    *flock.Flock
	term  uint64
	share Share // groups the lock file is shared with (NewShared)
	prev  Owner // the record the last winning TryLock replaced

	// afterLock, when set (by tests), runs after the flock is won and before the held file is
	// checked: the seam that lets a test replace the file at that exact moment.
	afterLock func()
}

// New returns a Lock for path. It does not touch the filesystem: the file is opened (and
// created, mode 0600) by TryLock.
func New(path string) *Lock {
	return &Lock{
		path: path,
		fl:   flock.New(path, flock.SetFlag(openFlag), flock.SetPermissions(filePerm)),
	}
}

// NewShared returns a Lock for path whose file members of other uids can open too, when
// share lists groups: TryLock creates it with mode 0660 exactly (whatever the umask), in
// the group of its directory when share lists that group, and gives it those
// permissions and that group if this process owns the file and it lacks them (a file
// left by an earlier private configuration). The file appears at path with its final
// mode and group at once (it is made under a temporary name and linked into place), so
// no member ever sees it half-shared. With an empty share.GIDs it is New. It does not
// touch the filesystem.
func NewShared(path string, share Share) *Lock {
	l := New(path)
	if len(share.GIDs) > 0 {
		l.share = share
		l.fl = flock.New(path, flock.SetFlag(openFlag), flock.SetPermissions(sharedFilePerm))
	}
	return l
}

// Path returns the path given to New.
func (l *Lock) Path() string { return l.path }

// Term returns the term won by the last successful TryLock, or 0 before any. It keeps that
// value after Unlock. It does not read the file.
func (l *Lock) Term() uint64 { return l.term }

// Previous returns what the lock file said about the previous holder when the last
// successful TryLock won: typically the Leader that just died. Pass it to WaitExited.
func (l *Lock) Previous() Owner { return l.prev }

// Locked reports whether this Lock holds the lock. It does not block and does not check that
// the file is still in place (Verify does).
func (l *Lock) Locked() bool { return l.fl.Locked() }

// TryLock tries once, without blocking, to take the exclusive lock. won=false with a nil
// error means another member holds it. It never waits for the lock (a blocking flock cannot
// be cancelled); callers poll.
//
// On a win it checks that the held descriptor and the path are still the same inode, with a
// link left, and that the path is a regular file; if not (the file was deleted or replaced
// while it was being locked) it releases and retries a few times, then returns an error
// matching ErrReplaced. Then it reads the previous term from the file, writes term+1 and this
// process's pid over the record (the file is never truncated to nothing, never deleted, and
// not fsynced) and records the term for Term. A record that is not one this package wrote is
// an error: TryLock never guesses a term.
//
// The file is opened O_RDWR|O_CREATE|O_NOFOLLOW|O_CLOEXEC with mode 0600 (Windows has no
// O_NOFOLLOW: there the path is checked just before the open). A symbolic link at the path
// makes TryLock fail with an error that names the path; the link's target is never created
// or written. Where locking is not supported, the error satisfies IsUnsupported.
// Calling TryLock while this Lock already holds the lock returns true and changes nothing.
func (l *Lock) TryLock() (won bool, err error) {
	if l.fl.Locked() {
		return true, nil
	}
	if err := platformCheck(l.path); err != nil {
		return false, err
	}
	if len(l.share.GIDs) > 0 {
		l.prepareShared()
	}
	for attempt := 1; ; attempt++ {
		won, err := l.fl.TryLock()
		if err != nil {
			return false, l.openError(err)
		}
		if !won {
			return false, nil
		}
		if l.afterLock != nil {
			l.afterLock()
		}
		term, err := l.claim()
		if err == nil {
			l.term = term
			return true, nil
		}
		if uerr := l.fl.Unlock(); uerr != nil {
			return false, errors.Join(err, fmt.Errorf("lock: releasing %s: %w", l.path, uerr))
		}
		if !errors.Is(err, ErrReplaced) {
			return false, err
		}
		if attempt == maxAttempts {
			return false, fmt.Errorf("%w (gave up after %d attempts; is something deleting or renaming files in %s?)",
				err, attempt, filepath.Dir(l.path))
		}
	}
}

// claim runs right after the flock is won: it checks the held file is the one at the path,
// then bumps the term in it. The flock is released by the caller if claim fails.
func (l *Lock) claim() (uint64, error) {
	held, err := l.fl.Stat()
	if err != nil {
		return 0, fmt.Errorf("lock: fstat of the held %s: %w", l.path, err)
	}
	// gofrs/flock does not expose its descriptor, so the record goes through a second one.
	// Closing it does not release the lock: flock belongs to the first descriptor's open
	// file description (and LockFileEx to its handle).
	f, err := os.OpenFile(l.path, recordFlag|os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || isSymlinkError(l.path, err) {
			return 0, fmt.Errorf("%w: %s: the path no longer names the locked file (%v)", ErrReplaced, l.path, err)
		}
		return 0, fmt.Errorf("lock: opening %s to write the term: %w", l.path, err)
	}
	term, err := l.bump(f, held)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("lock: writing the term to %s: %w", l.path, cerr)
	}
	return term, err
}

// bump checks that f, the held file and the path are one inode, then writes the next term.
func (l *Lock) bump(f *os.File, held fs.FileInfo) (uint64, error) {
	if err := sameFile(l.path, held); err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("lock: fstat %s: %w", l.path, err)
	}
	if !os.SameFile(held, fi) {
		return 0, fmt.Errorf("%w: %s: the path was replaced while it was being opened", ErrReplaced, l.path)
	}
	prev, err := readRecord(f, l.path)
	if err != nil {
		return 0, err
	}
	if prev.Term == math.MaxUint64 {
		return 0, fmt.Errorf("lock: %s: term %d cannot be incremented", l.path, prev.Term)
	}
	next := self()
	next.Term = prev.Term + 1
	if _, err := f.WriteAt(next.record(), recordOffset); err != nil {
		return 0, fmt.Errorf("lock: writing the term to %s: %w", l.path, err)
	}
	l.prev = prev
	return next.Term, nil
}

// sameFile reports, as an error matching ErrReplaced, that held (the fstat of the locked
// descriptor) is no longer the regular file the path names, or has no link left.
func sameFile(path string, held fs.FileInfo) error {
	if n, ok := linkCount(held); ok && n == 0 {
		return fmt.Errorf("%w: %s: the locked file has no links left (it was deleted)", ErrReplaced, path)
	}
	cur, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s: the path no longer exists (it was deleted)", ErrReplaced, path)
	case err != nil:
		return fmt.Errorf("lock: lstat %s: %w", path, err)
	case cur.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: %s: the path is now a symbolic link", ErrReplaced, path)
	case !cur.Mode().IsRegular():
		return fmt.Errorf("%w: %s: the path is not a regular file (mode %v)", ErrReplaced, path, cur.Mode())
	case !os.SameFile(held, cur):
		return fmt.Errorf("%w: %s: the path now names another file", ErrReplaced, path)
	}
	return nil
}

// Verify checks that this Lock still holds the lock on the file its path names. It returns
// nil if so, an error matching ErrReplaced if the file was deleted or replaced since TryLock
// (some other member may then hold a lock on the new file: release and elect again), and
// another error if the Lock is not held. It does not block and changes nothing.
func (l *Lock) Verify() error {
	if !l.fl.Locked() {
		return fmt.Errorf("lock: %s: not held", l.path)
	}
	held, err := l.fl.Stat()
	if err != nil {
		return fmt.Errorf("lock: fstat of the held %s: %w", l.path, err)
	}
	return sameFile(l.path, held)
}

// Unlock releases the lock and closes its descriptor. It never deletes or truncates the file
// (see the package documentation for why), does not block, and is idempotent: unlocking a
// Lock that is not held returns nil. Term keeps its value.
//
// Before releasing, it clears this process's identity from the record (term and pid stay):
// a holder that let go is not waited for by its successor's WaitExited, even if it goes on
// running. (A holder that dies without Unlock leaves its identity, and is waited for.)
func (l *Lock) Unlock() error {
	if l.fl.Locked() {
		l.markReleased()
	}
	if err := l.fl.Unlock(); err != nil {
		return fmt.Errorf("lock: unlocking %s: %w", l.path, err)
	}
	return nil
}

// prepareShared makes sure a shared lock file exists with its shared mode and group before
// gofrs/flock opens it: it creates a missing one under a temporary name, sets its mode and
// group, and links it into place (losing that race to another member is fine), or fixes
// the mode and group of an existing one this process owns. Failures are left for the open
// to report.
func (l *Lock) prepareShared() {
	dir := filepath.Dir(l.path)
	gid := SharedGID(dir, l.share)
	fi, err := os.Lstat(l.path)
	if err == nil {
		l.heal(fi, gid)
		return
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(l.path)+".*")
	if err != nil {
		return
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = chownGroup(f, gid, sharedFilePerm)
	if cerr := f.Close(); err != nil || cerr != nil {
		return
	}
	_ = os.Link(tmp, l.path) // EEXIST: another member made it first
}

// heal gives an existing lock file this process owns the shared mode and group.
func (l *Lock) heal(fi fs.FileInfo, gid int) {
	if !fi.Mode().IsRegular() || !ownedByMe(fi) {
		return
	}
	g, ok := fileGID(fi)
	if fi.Mode().Perm() == sharedFilePerm && (gid < 0 || (ok && int(g) == gid)) {
		return
	}
	f, err := os.OpenFile(l.path, recordFlag|os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if cur, err := f.Stat(); err == nil && os.SameFile(fi, cur) {
		_ = chownGroup(f, gid, sharedFilePerm)
	}
}

// openError explains a failure of gofrs/flock's open or flock call.
func (l *Lock) openError(err error) error {
	switch {
	case isSymlinkError(l.path, err):
		return fmt.Errorf("lock: %s is a symbolic link; refusing to follow it (remove the link: the lock file must be a regular file): %w", l.path, err)
	case IsUnsupported(err):
		return fmt.Errorf("lock: %s: file locking is not supported here (%w); elect over TCP instead", l.path, err)
	case errors.Is(err, fs.ErrPermission):
		dir := filepath.Dir(l.path)
		if _, lerr := os.Lstat(l.path); errors.Is(lerr, fs.ErrNotExist) {
			return fmt.Errorf("lock: cannot create the lock file %s (directory %s; %s): make the directory writable by this uid (chown), or by a group every member shares (mode 2770, and share that group): %w",
				l.path, fileOwner(dir), whoAmI(), err)
		}
		hint := "members of different uids must share a group that may read and write it (mode 0660)"
		if len(l.share.GIDs) > 0 {
			hint = fmt.Sprintf("it must belong to one of the shared groups %v, mode 0660: run \"chgrp GID %s && chmod 0660 %s\" once (never delete it)",
				l.share.GIDs, l.path, l.path)
		}
		return fmt.Errorf("lock: cannot open the lock file read-write (%s; directory %s; %s): %s: %w",
			fileOwner(l.path), fileOwner(dir), whoAmI(), hint, err)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == l.path {
		return fmt.Errorf("lock: %w", err)
	}
	return fmt.Errorf("lock: %s: %w", l.path, err)
}

// isSymlinkError reports whether err, from an O_NOFOLLOW open of path, is due to a symbolic
// link at path. The errno varies (ELOOP on Linux and macOS, EMLINK on FreeBSD, EFTYPE on
// NetBSD), so the path is looked at too.
func isSymlinkError(path string, err error) bool {
	if errSymlinkErrno != nil && errors.Is(err, errSymlinkErrno) {
		return true
	}
	fi, lerr := os.Lstat(path)
	return lerr == nil && fi.Mode()&fs.ModeSymlink != 0
}

// readAtMost reads up to n bytes of f from off; a short file is not an error.
func readAtMost(f *os.File, off int64, n int) ([]byte, error) {
	buf := make([]byte, n)
	m, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:m], nil
}

// markReleased rewrites the record without this process's identity, if the path still
// names the held file. It is best effort: failing costs a successor a bounded wait.
func (l *Lock) markReleased() {
	held, err := l.fl.Stat()
	if err != nil {
		return
	}
	f, err := os.OpenFile(l.path, recordFlag|os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !os.SameFile(held, fi) {
		return
	}
	_, _ = f.WriteAt(Owner{Term: l.term, PID: os.Getpid()}.record(), recordOffset)
}

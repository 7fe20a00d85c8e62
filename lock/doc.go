// Package lock is the election primitive of cluster: an exclusive, crash-released file lock
// on <Dir>/<Name>.lock, a leadership term stored in that file, and the safety checks for the
// directory that holds the lock and the socket.
//
// # Model
//
// Every member of a cluster owns one [Lock] on the same path and calls [Lock.TryLock] from its
// election loop. The lock is a flock(2) on an open file description (LockFileEx on Windows),
// taken through github.com/gofrs/flock. The kernel drops it when the holder's last descriptor
// closes, so a Leader that dies, even by SIGKILL, frees the lock without anyone cleaning up.
// Each winner reads the previous term from the file and writes term+1 and its pid, so terms
// increase strictly across holders, survive restarts of every member, and are never reused
// while the file lives.
//
// # Why the file is never deleted
//
// Nothing in this package ever deletes or truncates the lock file, and nothing else should.
// A lock lives on an inode, not on a name. If a holder A (or a janitor) unlinks the file, the
// next member opens the same name, creates a new inode, locks it and wins: two members hold
// "the lock" at once. Deleting on Unlock races the same way: B opens the old inode, A unlinks
// and unlocks, B locks the unlinked inode, C creates a new file and locks it. TryLock checks,
// after winning, that the held descriptor and the path are still the same inode (and that the
// inode still has a link), and retries otherwise, but that check only catches a deletion that
// happened before it ran: it is a guard, not a licence to delete. [Lock.Verify] repeats the
// check for a holder that wants to know later.
//
// # Why TryLock only
//
// A blocking flock cannot be cancelled: a goroutine stuck in flock(2) stays there until the
// lock frees, whatever the caller's context says, and goleak reports it. gofrs/flock's Lock
// also holds its mutex while blocked. So this package never blocks on the lock: TryLock tries
// once and returns. Callers wake up on events (the Leader's socket closing, ECONNREFUSED) and
// poll with their own backoff.
//
// # Safety, not liveness
//
// A stopped (SIGSTOP) or hung holder keeps its lock: the kernel only releases it when the
// descriptor closes. Nobody can take over while the holder is stopped, which is exactly what
// makes "never two Leaders" hold; Followers can only time out and wait. A holder that clears
// FD_CLOEXEC on the lock descriptor and then starts a child makes the child a co-holder: the
// lock then outlives the Leader. Go opens files with O_CLOEXEC and this package never clears
// it.
//
// # Platforms
//
// Linux, macOS and the BSDs use flock(2), opened O_RDWR|O_CREATE|O_NOFOLLOW|O_CLOEXEC with mode
// 0600; a symbolic link planted at the path makes TryLock fail rather than follow it.
// On a network filesystem flock may be shared across hosts (NFS emulates it with byte-range
// locks) while a Unix socket is not: check the directory with [FSKind]. On overlayfs,
// non-directories may change st_ino on copy-up; the lock file is opened read-write, so it is
// copied up before it is locked and the inode check stays meaningful.
//
// Windows uses LockFileEx on the first byte of the file. Such locks are mandatory for other
// handles, so the record (term and pid) lives from byte 1 on; the directory's owner and mode
// checks are skipped there, because Windows access control is not expressed in mode bits.
// AIX and Solaris, where gofrs/flock uses fcntl record locks (per process, dropped when any
// descriptor of the file closes), report an unsupported error so callers fall back to TCP.
// Where locking is not available at all, [IsUnsupported] reports the error as such.
//
// A Lock is not safe for concurrent use: one goroutine (the member's election loop) owns it.
// Two Locks on the same path conflict even inside one process, because flock belongs to the
// open file description; tests rely on that to run several members in one process.
package lock

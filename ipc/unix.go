//go:build !windows

package ipc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// maxUnixPath is the longest socket path this platform's sun_path holds.
// One byte of sun_path is kept for the terminating NUL.
var maxUnixPath = len(unix.RawSockaddrUnix{}.Path) - 1

// Listener accepts connections on a Unix socket that it created with a fixed mode and
// will never unlink on Close: only the owner of the election lock removes the socket
// file, through Unlink, and only if it is still the file this Listener bound.
type Listener struct {
	ln   *net.UnixListener
	path string
	dev  uint64
	ino  uint64
	// pin keeps the bound inode alive (Linux: an O_PATH descriptor) so that its number
	// cannot be reused by a successor's socket while Unlink still compares against it.
	pin *os.File
}

// CheckUnixPath returns an error matching ErrPathTooLong, naming the path, its length
// and the limit, if path does not fit in sun_path.
func CheckUnixPath(path string) error {
	if len(path) > maxUnixPath {
		return fmt.Errorf("%w: %q is %d bytes, the limit is %d; choose a shorter Dir or Name", ErrPathTooLong, path, len(path), maxUnixPath)
	}
	return nil
}

// ListenUnix binds a Unix socket at path with the given permission bits. It is
// ListenUnixGroup with no group.
func ListenUnix(path string, mode os.FileMode) (*Listener, error) {
	return ListenUnixGroup(path, mode, -1)
}

// ListenUnixGroup binds a Unix socket at path with exactly the given permission bits,
// and gives it group gid unless gid is negative (the caller must belong to that group).
// The socket is bound under a staging name beside path (path with its last byte
// replaced by '~'), given its mode and group, and renamed over path: it is never
// reachable at path with other permissions, and a stale socket left at path (by a dead
// Leader) is replaced in the same step. Anything else at path or at the staging name (a
// regular file, a symlink, a directory) is refused. The caller must hold the election
// lock: the staging name is the lock holder's alone.
func ListenUnixGroup(path string, mode os.FileMode, gid int) (*Listener, error) {
	if err := CheckUnixPath(path); err != nil {
		return nil, err
	}
	staging := stagingPath(path)
	for _, p := range []string{path, staging} {
		if fi, err := os.Lstat(p); err == nil && fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("refusing to replace %s: it is a %v, not a socket; remove it by hand if it is not yours", p, fi.Mode().Type())
		}
	}
	if err := os.Remove(staging); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing a stale staging socket: %w", err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var cerr error
		if err := rc.Control(func(fd uintptr) { cerr = unix.Fchmod(int(fd), uint32(mode.Perm())) }); err != nil {
			return err
		}
		return cerr
	}}
	ln, err := lc.Listen(context.Background(), "unix", staging)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", staging, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	fail := func(err error) (*Listener, error) {
		_ = ul.Close()
		_ = os.Remove(staging)
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Lstat(staging, &st); err != nil {
		return fail(fmt.Errorf("stat %s after bind: %w", staging, err))
	}
	if gid >= 0 && int(st.Gid) != gid {
		if err := os.Lchown(staging, -1, gid); err != nil {
			return fail(fmt.Errorf("giving the socket %s to group %d: %w", staging, gid, err))
		}
	}
	// bind filters the fchmod'ed mode through the umask, so a group-accessible mode may
	// have lost bits: set exactly what was asked, before the socket is at path.
	if os.FileMode(st.Mode)&os.ModePerm != mode.Perm() {
		if err := os.Chmod(staging, mode.Perm()); err != nil {
			return fail(fmt.Errorf("chmod %s: %w", staging, err))
		}
	}
	pin := pinInode(staging)
	if err := os.Rename(staging, path); err != nil {
		if pin != nil {
			_ = pin.Close()
		}
		return fail(fmt.Errorf("moving the socket into place at %s: %w", path, err))
	}
	l := &Listener{ln: ul, path: path, dev: uint64(st.Dev), ino: uint64(st.Ino), pin: pin}
	if l.pin != nil {
		// Identify the socket by the pinned inode.
		var ps unix.Stat_t
		if err := unix.Fstat(int(l.pin.Fd()), &ps); err == nil {
			l.dev, l.ino = uint64(ps.Dev), uint64(ps.Ino)
		}
	}
	return l, nil
}

// stagingPath is where ListenUnixGroup binds before renaming: path with its last byte
// replaced, so that it fits in sun_path whenever path does.
func stagingPath(path string) string {
	if strings.HasSuffix(path, "~") {
		return path[:len(path)-1] + "#"
	}
	return path[:len(path)-1] + "~"
}

// Accept waits for the next connection and reports the peer's credentials.
func (l *Listener) Accept() (net.Conn, PeerCred, error) {
	c, err := l.ln.Accept()
	if err != nil {
		return nil, PeerCred{}, err
	}
	p, err := peerCred(c)
	if err != nil {
		_ = c.Close()
		return nil, PeerCred{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	return c, p, nil
}

// Addr returns the socket path.
func (l *Listener) Addr() string { return l.path }

// Close stops accepting. It does not remove the socket file.
func (l *Listener) Close() error { return l.ln.Close() }

// Unlink removes the socket file if it is still the one this Listener bound. Call it
// after Close and before releasing the election lock; call it even if the file should
// stay, since it also releases the pinned inode.
func (l *Listener) Unlink() error {
	if l.pin != nil {
		defer func() {
			_ = l.pin.Close()
			l.pin = nil
		}()
	}
	var st unix.Stat_t
	if err := unix.Lstat(l.path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if uint64(st.Dev) != l.dev || uint64(st.Ino) != l.ino {
		return nil // someone else's socket now: leave it
	}
	return os.Remove(l.path)
}

// DialUnix connects to the Leader's socket. A missing or refusing socket is an error
// matching ErrNoListener, a full backlog ErrBacklogFull; both are Retryable. A socket
// whose permissions refuse this process is an error matching ErrPermission that says who
// owns the socket and its directory, their modes, and who this process is.
func DialUnix(ctx context.Context, path string) (net.Conn, error) {
	if err := CheckUnixPath(path); err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		return c, nil
	}
	switch {
	case errors.Is(err, syscall.ENOENT):
		return nil, fmt.Errorf("%w: socket %s does not exist", ErrNoListener, path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%w: socket %s refuses connections (stale file of a dead leader?)", ErrNoListener, path)
	case errors.Is(err, syscall.EAGAIN):
		return nil, fmt.Errorf("%w: %s", ErrBacklogFull, path)
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("%w: connecting to %s (%s; its directory: %s; %s): connecting needs write permission on the socket and search permission on every directory above it: %w",
			ErrPermission, path, describe(path), describe(filepath.Dir(path)), whoAmI(), err)
	}
	return nil, err
}

// describe names a file's owner, group and mode for an error message.
func describe(path string) string {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("owner uid %d, group gid %d, mode %#o", st.Uid, st.Gid, st.Mode&0o7777)
}

// whoAmI describes this process's credentials for an error message.
func whoAmI() string {
	groups, _ := os.Getgroups()
	return fmt.Sprintf("this process: uid %d, gid %d, groups %v", os.Geteuid(), os.Getegid(), groups)
}

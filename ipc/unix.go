//go:build !windows

package ipc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// MaxUnixPath is the longest socket path this platform's sun_path holds.
// One byte of sun_path is kept for the terminating NUL.
var MaxUnixPath = len(unix.RawSockaddrUnix{}.Path) - 1

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
	if len(path) > MaxUnixPath {
		return fmt.Errorf("%w: %q is %d bytes, the limit is %d; choose a shorter Dir or Name", ErrPathTooLong, path, len(path), MaxUnixPath)
	}
	return nil
}

// ListenUnix binds a Unix socket at path with the given permission bits, applied with
// fchmod before bind so the socket is never reachable with looser ones. A stale socket
// left at path (by a dead Leader) is removed first; anything else at path (a regular
// file, a symlink, a directory) is refused. The caller must hold the election lock.
func ListenUnix(path string, mode os.FileMode) (*Listener, error) {
	if err := CheckUnixPath(path); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("refusing to replace %s: it is a %v, not a socket; remove it by hand if it is not yours", path, fi.Mode().Type())
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var cerr error
		if err := rc.Control(func(fd uintptr) { cerr = unix.Fchmod(int(fd), uint32(mode.Perm())) }); err != nil {
			return err
		}
		return cerr
	}}
	ln, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		_ = ul.Close()
		return nil, fmt.Errorf("stat %s after bind: %w", path, err)
	}
	// bind filters the fchmod'ed mode through the umask, so a group-accessible mode may
	// have lost bits: set exactly what was asked. Until now the socket was only tighter.
	if os.FileMode(st.Mode)&os.ModePerm != mode.Perm() {
		if err := os.Chmod(path, mode.Perm()); err != nil {
			_ = ul.Close()
			return nil, fmt.Errorf("chmod %s: %w", path, err)
		}
	}
	l := &Listener{ln: ul, path: path, dev: uint64(st.Dev), ino: uint64(st.Ino), pin: pinInode(path)}
	if l.pin != nil {
		// Identify the socket by the pinned inode, in case the path changed since bind.
		var ps unix.Stat_t
		if err := unix.Fstat(int(l.pin.Fd()), &ps); err == nil {
			l.dev, l.ino = uint64(ps.Dev), uint64(ps.Ino)
		}
	}
	return l, nil
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
// matching ErrNoListener, a full backlog ErrBacklogFull; both are Retryable.
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
	}
	return nil, err
}

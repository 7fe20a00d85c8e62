//go:build linux

package ipc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/frame"
)

func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// leaveStale closes ln as a Leader that dies would: the socket file stays, and so does
// nothing else (Unlink would remove the file; the pinned inode is let go directly).
func leaveStale(t *testing.T, ln *Listener) {
	t.Helper()
	require.NoError(t, ln.Close())
	if ln.pin != nil {
		require.NoError(t, ln.pin.Close())
	}
}

// closeAndUnlink releases ln as the Leader that owns it does.
func closeAndUnlink(ln *Listener) {
	_ = ln.Close()
	_ = ln.Unlink()
}

func TestListenUnixModeStaleSocketsAndUnlink(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	path := filepath.Join(shortDir(t), "s.sock")

	ln, err := ListenUnix(path, 0o600)
	require.NoError(t, err)
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// Close leaves the file (only the lock holder removes it): a stale socket.
	require.NoError(t, ln.Close())
	_, err = os.Lstat(path)
	require.NoError(t, err, "Close must not unlink")
	_, err = DialUnix(context.Background(), path)
	require.ErrorIs(t, err, ErrNoListener)
	require.True(t, Retryable(err))

	// The next lock holder replaces the stale file.
	ln2, err := ListenUnix(path, 0o660)
	require.NoError(t, err)
	fi, err = os.Lstat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o660), fi.Mode().Perm())

	// The old Listener's Unlink must not remove its successor's socket.
	require.NoError(t, ln.Unlink())
	_, err = os.Lstat(path)
	require.NoError(t, err, "an old leader removed its successor's socket")
	require.NoError(t, ln2.Close())
	require.NoError(t, ln2.Unlink())
	_, err = os.Lstat(path)
	require.ErrorIs(t, err, os.ErrNotExist)

	_, err = DialUnix(context.Background(), path)
	require.ErrorIs(t, err, ErrNoListener)
	require.Contains(t, err.Error(), "does not exist")
}

func TestListenUnixGroupExactModeGroupAndStaging(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := shortDir(t)
	path := filepath.Join(dir, "g.sock")
	gid := os.Getegid()
	if os.Geteuid() == 0 {
		gid = 2345 // root may give a file any group
	}
	// A stale socket of a dead Leader and a stale staging socket are both replaced.
	for _, p := range []string{path, stagingPath(path)} {
		ln, err := ListenUnix(p, 0o600)
		require.NoError(t, err)
		leaveStale(t, ln)
	}
	ln, err := ListenUnixGroup(path, 0o660, gid)
	require.NoError(t, err)
	defer closeAndUnlink(ln)
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o660), fi.Mode().Perm(), "the umask cut the mode")
	require.Equal(t, uint32(gid), fi.Sys().(*syscall.Stat_t).Gid)
	_, err = os.Lstat(stagingPath(path))
	require.ErrorIs(t, err, os.ErrNotExist, "the staging name is left behind")
	c, err := DialUnix(context.Background(), path)
	require.NoError(t, err, "the renamed socket accepts at its path")
	s, _, err := ln.Accept()
	require.NoError(t, err)
	s.Close()
	c.Close()

	// Something that is not a socket at the staging name is refused, not removed.
	require.NoError(t, ln.Close())
	require.NoError(t, os.WriteFile(stagingPath(path), []byte("x"), 0o600))
	_, err = ListenUnix(path, 0o600)
	require.ErrorContains(t, err, "not a socket")
	require.Equal(t, "g.soc~", filepath.Base(stagingPath(path)))
	require.Equal(t, "a~#", filepath.Base(stagingPath("/d/a~~")))
}

func TestListenUnixRefusesToReplaceNonSockets(t *testing.T) {
	dir := shortDir(t)
	file := filepath.Join(dir, "f.sock")
	require.NoError(t, os.WriteFile(file, []byte("precious"), 0o600))
	_, err := ListenUnix(file, 0o600)
	require.ErrorContains(t, err, "not a socket")
	b, _ := os.ReadFile(file)
	require.Equal(t, "precious", string(b))

	link := filepath.Join(dir, "l.sock")
	require.NoError(t, os.Symlink(file, link))
	_, err = ListenUnix(link, 0o600)
	require.ErrorContains(t, err, "not a socket")
}

func TestPathLimit(t *testing.T) {
	long := "/" + strings.Repeat("x", maxUnixPath)
	err := CheckUnixPath(long)
	require.ErrorIs(t, err, ErrPathTooLong)
	require.Contains(t, err.Error(), "limit is 107")
	require.NoError(t, CheckUnixPath(long[:maxUnixPath]))
	_, err = DialUnix(context.Background(), long)
	require.ErrorIs(t, err, ErrPathTooLong)
}

func TestAcceptReportsPeerCredentials(t *testing.T) {
	path := filepath.Join(shortDir(t), "s.sock")
	ln, err := ListenUnix(path, 0o600)
	require.NoError(t, err)
	defer closeAndUnlink(ln)
	c, err := DialUnix(context.Background(), path)
	require.NoError(t, err)
	defer c.Close()
	s, peer, err := ln.Accept()
	require.NoError(t, err)
	defer s.Close()
	require.True(t, peer.Known)
	require.Equal(t, int32(os.Getpid()), peer.PID)
	require.Equal(t, uint32(os.Geteuid()), peer.UID)
	groups, err := os.Getgroups()
	require.NoError(t, err)
	want := make([]uint32, len(groups))
	for i, g := range groups {
		want[i] = uint32(g)
	}
	require.ElementsMatch(t, want, peer.Groups, "SO_PEERGROUPS")
	require.NoError(t, PeerPolicy{}.Check(peer, uint32(os.Geteuid())))
}

func TestPeerPolicy(t *testing.T) {
	p := PeerCred{Known: true, PID: 1, UID: 1001, GID: 2000}
	require.ErrorIs(t, PeerPolicy{}.Check(p, 1000), ErrUnauthorizedPeer)
	require.ErrorContains(t, PeerPolicy{}.Check(p, 1000), "AllowUIDs")
	require.NoError(t, PeerPolicy{}.Check(p, 1001))
	require.NoError(t, PeerPolicy{UIDs: []uint32{5, 1001}}.Check(p, 1000))
	require.NoError(t, PeerPolicy{GIDs: []uint32{2000}}.Check(p, 1000))
	// A supplementary group counts (a container's group_add).
	sup := PeerCred{Known: true, PID: 0, UID: 1001, GID: 1001, Groups: []uint32{10, 2000}}
	require.NoError(t, PeerPolicy{GIDs: []uint32{2000}}.Check(sup, 1000))
	err := PeerPolicy{GIDs: []uint32{3000}}.Check(sup, 1000)
	require.ErrorIs(t, err, ErrUnauthorizedPeer)
	require.ErrorContains(t, err, "Config.AllowGIDs")
	require.ErrorContains(t, err, "groups=[10 2000]")
	require.ErrorIs(t, PeerPolicy{}.Check(PeerCred{}, 1000), ErrUnauthorizedPeer)
	require.NoError(t, PeerPolicy{AllowUnknown: true}.Check(PeerCred{}, 1000))
}

func TestHandshake(t *testing.T) {
	accept := func(h frame.Hello) (frame.Welcome, *FrameError) {
		if h.Name != "svc" {
			return frame.Welcome{}, &FrameError{Code: frame.CodeProtocol, Message: "wrong cluster " + h.Name}
		}
		return frame.Welcome{PID: 7, Term: 3, Name: "svc", MaxBody: 99}, nil
	}
	run := func(hello frame.Hello) (frame.Welcome, error, error) {
		a, b := socketPair(t)
		defer a.Close()
		defer b.Close()
		srvErr := make(chan error, 1)
		go func() {
			_, err := ServerHandshake(b, time.Now().Add(10*time.Second), accept)
			srvErr <- err
		}()
		w, err := ClientHandshake(a, hello, time.Now().Add(10*time.Second))
		return w, err, <-srvErr
	}
	w, cerr, serr := run(frame.Hello{MinVersion: 1, MaxVersion: 1, Name: "svc"})
	require.NoError(t, cerr)
	require.NoError(t, serr)
	require.Equal(t, uint64(3), w.Term)
	require.Equal(t, uint32(7), w.PID)

	_, cerr, serr = run(frame.Hello{MinVersion: 1, MaxVersion: 1, Name: "other"})
	require.ErrorIs(t, cerr, ErrPeerRefused)
	require.ErrorContains(t, cerr, "wrong cluster other")
	require.ErrorIs(t, serr, ErrPeerRefused)

	_, cerr, serr = run(frame.Hello{MinVersion: 2, MaxVersion: 3, Name: "svc"})
	require.ErrorIs(t, cerr, ErrPeerRefused)
	require.ErrorContains(t, cerr, "version 1")
	require.ErrorIs(t, serr, frame.ErrVersion)
}

package ipc

import (
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PeerCredSupported reports whether this platform tells a listener who connected.
const PeerCredSupported = true

// peerCred reads SO_PEERCRED from an accepted Unix socket.
func peerCred(c net.Conn) (PeerCred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return PeerCred{}, nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return PeerCred{}, err
	}
	var cred *unix.Ucred
	var groups []uint32
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if serr == nil {
			groups = peerGroups(int(fd))
		}
	}); err != nil {
		return PeerCred{}, err
	}
	if serr != nil {
		return PeerCred{}, serr
	}
	return PeerCred{Known: true, PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, Groups: groups}, nil
}

// peerGroups reads SO_PEERGROUPS: the peer's supplementary groups as of its connect
// (Linux 4.13+), or nil when the kernel cannot tell.
func peerGroups(fd int) []uint32 {
	n := 32
	for range 3 {
		buf := make([]uint32, n)
		size := uint32(4 * n)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch errno {
		case 0:
			return buf[:size/4]
		case unix.ERANGE:
			n = int(size/4) + 1 // the kernel said how much it needs
			continue
		}
		return nil
	}
	return nil
}

package ipc

import (
	"net"

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
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return PeerCred{}, err
	}
	if serr != nil {
		return PeerCred{}, serr
	}
	return PeerCred{Known: true, PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

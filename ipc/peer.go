package ipc

import (
	"fmt"
	"slices"
)

// PeerCred is what the kernel says about the process at the other end of a Unix socket
// (SO_PEERCRED on Linux), as of its connect. PID is advisory: it is 0 for a peer in a
// sibling pid namespace and pids are reused. Known is false where the platform or the
// transport (TCP) cannot tell.
type PeerCred struct {
	Known bool
	PID   int32
	UID   uint32
	GID   uint32
	// Groups are the peer's supplementary groups (SO_PEERGROUPS, Linux 4.13+), as of its
	// connect; nil where unknown.
	Groups []uint32
}

// String describes the peer for logs and errors: "peer(pid=1 uid=1000 gid=1000
// groups=[2000])".
func (p PeerCred) String() string {
	if !p.Known {
		return "peer(unknown)"
	}
	if len(p.Groups) > 0 {
		return fmt.Sprintf("peer(pid=%d uid=%d gid=%d groups=%v)", p.PID, p.UID, p.GID, p.Groups)
	}
	return fmt.Sprintf("peer(pid=%d uid=%d gid=%d)", p.PID, p.UID, p.GID)
}

// PeerPolicy decides which local peers may connect. A peer is admitted if its uid equals
// the listener's effective uid, or is in UIDs, or its gid or one of its supplementary
// groups is in GIDs. A peer whose credentials are unknown is admitted only if
// AllowUnknown is set.
type PeerPolicy struct {
	UIDs         []uint32
	GIDs         []uint32
	AllowUnknown bool
}

// Check returns nil if p may connect, or an error wrapping ErrUnauthorized-style text
// that says who was refused and which setting admits them.
func (pp PeerPolicy) Check(p PeerCred, selfUID uint32) error {
	if !p.Known {
		if pp.AllowUnknown {
			return nil
		}
		return fmt.Errorf("%w: peer credentials unavailable on this platform; allow unknown peers explicitly", ErrUnauthorizedPeer)
	}
	if p.UID == selfUID {
		return nil
	}
	for _, u := range pp.UIDs {
		if u == p.UID {
			return nil
		}
	}
	for _, g := range pp.GIDs {
		if g == p.GID || slices.Contains(p.Groups, g) {
			return nil
		}
	}
	return fmt.Errorf("%w: %v is not uid %d and not in the allowed uids %v or gids %v: the Leader admits it once its Config.AllowUIDs lists uid %d or its Config.AllowGIDs lists one of its groups (set the same on every member: any may lead)",
		ErrUnauthorizedPeer, p, selfUID, pp.UIDs, pp.GIDs, p.UID)
}

package ipc

import "fmt"

// PeerCred is what the kernel says about the process at the other end of a Unix socket
// (SO_PEERCRED on Linux), as of its connect. PID is advisory: it is 0 for a peer in a
// sibling pid namespace and pids are reused. Known is false where the platform or the
// transport (TCP) cannot tell.
type PeerCred struct {
	Known bool
	PID   int32
	UID   uint32
	GID   uint32
}

func (p PeerCred) String() string {
	if !p.Known {
		return "peer(unknown)"
	}
	return fmt.Sprintf("peer(pid=%d uid=%d gid=%d)", p.PID, p.UID, p.GID)
}

// PeerPolicy decides which local peers may connect. A peer is admitted if its uid equals
// the listener's effective uid, or is in UIDs, or its gid is in GIDs. A peer whose
// credentials are unknown is admitted only if AllowUnknown is set.
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
		if g == p.GID {
			return nil
		}
	}
	return fmt.Errorf("%w: %v is not uid %d and not in the allowed uids %v or gids %v (Config.AllowUIDs / Config.AllowGIDs)", ErrUnauthorizedPeer, p, selfUID, pp.UIDs, pp.GIDs)
}

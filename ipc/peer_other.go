//go:build !linux

package ipc

import "net"

// PeerCredSupported reports whether this platform tells a listener who connected.
const PeerCredSupported = false

// peerCred is not implemented off Linux: the socket's mode and the 0700 directory are
// the gate there, and PeerPolicy.AllowUnknown must be set.
func peerCred(net.Conn) (PeerCred, error) { return PeerCred{}, nil }

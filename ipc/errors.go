package ipc

import (
	"errors"
	"fmt"
)

// Errors reported by the transport. The root package maps them to its own sentinels.
var (
	// ErrClosed is the cause of a Conn or Listener closed by its owner.
	ErrClosed = errors.New("connection closed")
	// ErrNotSent marks a Call that failed before its request was queued: the peer cannot
	// have seen it, so it is safe to send it elsewhere.
	ErrNotSent = errors.New("request not sent")
	// ErrSendClosed is returned by Send after CloseSend; the frame was not queued.
	ErrSendClosed = errors.New("sending side closed")
	// ErrConnLost wraps the cause when an operation fails because the Conn ended.
	ErrConnLost = errors.New("connection lost")
	// ErrSlowConsumer is the cause when a peer let more than Options.MaxQueue bytes pile up.
	ErrSlowConsumer = errors.New("peer is not reading: outbound queue full")
	// ErrHeartbeatTimeout is the cause when a peer stayed silent past Options.HeartbeatTimeout.
	ErrHeartbeatTimeout = errors.New("heartbeat timeout")
	// ErrFrameTimeout is the cause when a peer did not complete a frame within
	// Options.FrameTimeout of its header.
	ErrFrameTimeout = errors.New("frame timeout")
	// ErrNoListener means nothing listens at the address: the socket file is missing
	// (ENOENT) or refuses connections (ECONNREFUSED, a stale file left by a dead Leader).
	// It is retryable.
	ErrNoListener = errors.New("no leader listening")
	// ErrBacklogFull means the listener's accept queue was full (EAGAIN on connect), which
	// happens in reconnect storms. It is retryable.
	ErrBacklogFull = errors.New("leader's accept backlog is full")
	// ErrPermission means the filesystem refused to let this process connect to the
	// Unix socket (EACCES): the socket's mode or group, or a directory above it. It is
	// not retryable: the Leader's socket mode, or the directory, must change.
	ErrPermission = errors.New("socket permission denied")
	// ErrPathTooLong means a Unix socket path does not fit in sun_path.
	ErrPathTooLong = errors.New("socket path too long")
	// ErrPeerRefused is returned by a handshake the other side rejected.
	ErrPeerRefused = errors.New("handshake refused")
	// ErrNotOurProtocol means the peer answered with bytes that are not this protocol.
	ErrNotOurProtocol = errors.New("peer does not speak the cluster protocol")
	// ErrFDUnsupported is returned when files are sent on a Conn that cannot pass file
	// descriptors: one over TCP, or on a platform other than Linux. CanPassFiles reports
	// it in advance.
	ErrFDUnsupported = errors.New("this connection cannot pass file descriptors")
	// ErrTooManyFiles is returned by SendParts and Call when asked to attach more than
	// frame.MaxFDs files to one frame; nothing was sent.
	ErrTooManyFiles = errors.New("too many files for one frame")
)

// FrameError is an error frame received from the peer: a short code (see frame.Code*)
// and a message.
type FrameError struct {
	Code    string
	Message string
}

func (e *FrameError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Retryable reports whether a dial error means "no Leader right now, try again".
func Retryable(err error) bool {
	return errors.Is(err, ErrNoListener) || errors.Is(err, ErrBacklogFull)
}

// ErrUnauthorizedPeer is the cause when a peer fails the PeerPolicy.
var ErrUnauthorizedPeer = errors.New("peer not authorized")

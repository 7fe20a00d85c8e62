package frame

import "errors"

// Sentinel errors. Errors returned by this package wrap them with detail (the field, the
// value received and the limit); match them with errors.Is.
var (
	// ErrProtocol means the bytes received break the wire protocol: an unknown kind, a
	// reserved flag, too many file descriptors, a malformed handshake body.
	ErrProtocol = errors.New("protocol violation")
	// ErrTooLarge means a frame's meta or body is longer than the receiver's Limits, or
	// longer than a frame can carry at all.
	ErrTooLarge = errors.New("frame too large")
	// ErrVersion means the peer speaks another protocol version. It also matches
	// ErrProtocol.
	ErrVersion error = &childError{"unsupported protocol version", ErrProtocol}
)

// childError is a sentinel that also matches a more general one.
type childError struct {
	msg    string
	parent error
}

func (e *childError) Error() string { return e.msg }
func (e *childError) Unwrap() error { return e.parent }

// Error codes: the meta of a [KindError] frame, whose body is a UTF-8 message for humans.
// A receiver must accept codes it does not know and treat them as a generic failure.
const (
	CodeRemote       = "remote"       // the Leader's Service returned an error; the body is its text
	CodeRemoteCodes  = "remote-codes" // the same, for an error that matched application codes: see AppendRemoteCodes
	CodePanic        = "panic"        // the Leader's Service panicked serving the request; the Leader recovered
	CodeTimeout      = "timeout"      // the request's timeout passed before the Service answered
	CodeTooLarge     = "too-large"    // a meta or body exceeded the receiver's limits
	CodeProtocol     = "protocol"     // the peer broke the wire protocol; the connection closes
	CodeUnauthorized = "unauthorized" // the Leader refused the peer (credentials, token or cluster name)
	CodeIdentity     = "identity"     // the Leader refused the peer: its service identity differs
	CodeVersion      = "version"      // no common protocol version; the body lists the versions spoken
	CodeClosed       = "closed"       // the Leader is shutting down; to a hello: try again
	CodeNotFound     = "not-found"    // unknown request id, method or topic
	CodeBusy         = "busy"         // the Leader is overloaded; the request was not run
	CodeLimit        = "limit"        // the peer exceeded one of the receiver's limits; the body names it
)

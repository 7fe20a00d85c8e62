package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/ipc"
)

// Sentinel errors. Match them with errors.Is; the returned errors wrap them with detail.
var (
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("cluster: client closed")
	// ErrLeaderLost: the connection to the Leader ended while the call was in flight. The
	// call may or may not have run: it is never re-sent silently (at-most-once).
	ErrLeaderLost = errors.New("cluster: leader lost while the call was in flight")
	// ErrTimeout: the call's deadline (its ctx or Config.CallTimeout) passed. Errors that
	// match it also match context.DeadlineExceeded and report Timeout() == true.
	ErrTimeout = errors.New("cluster: call timed out")
	// ErrTooLarge: a method, topic or payload exceeds a limit (Config.MaxBody,
	// Config.MaxBlob, the protocol's). The same limits apply in every role: the Leader
	// checks its own calls, and its Service's answers to them, as it checks a
	// Follower's. The error says the size, the limit and what to change.
	ErrTooLarge = frame.ErrTooLarge
	// ErrProtocol: a peer broke the wire protocol.
	ErrProtocol = frame.ErrProtocol
	// ErrUnauthorized: this member is not let in: the Leader refused it (peer
	// credentials or token), or the filesystem did (the Leader's socket or the lock
	// file is not accessible to this uid or its groups). The error names the Config
	// setting to change (AllowUIDs, AllowGIDs, SocketMode). A Leader of another cluster
	// name is ErrProtocol.
	ErrUnauthorized = errors.New("cluster: not authorized")
	// ErrNoLeader: no Leader could be reached before the context ended. The error says
	// what was found (who holds the lock, whether the socket exists or refuses).
	ErrNoLeader = errors.New("cluster: no leader reachable")
	// ErrConfig: the Config is invalid, or an argument is (a nil callback, an empty
	// method or topic name); the error names the field or the argument.
	ErrConfig = errors.New("cluster: invalid config")
	// ErrServicePanic: the Leader's Service panicked while serving the call (or
	// NewService panicked). The Leader recovered, logged the stack at ERROR, counted it
	// in Stats.Panics and goes on serving everyone else; the call fails with a
	// *RemoteError that matches ErrServicePanic and names the method and the panic
	// value, in every role.
	ErrServicePanic = errors.New("cluster: the service panicked")
	// ErrServiceUnavailable: this member won the election and could not build its
	// Service (NewService failed or panicked). Join returns it, wrapping NewService's
	// error, when that happens to a member that is joining; after a failover, calls on
	// a member whose NewService just failed return it, with the cause, until a Leader
	// serves again (see Config.NewService for the retries).
	ErrServiceUnavailable = errors.New("cluster: the service is unavailable")
	// ErrIdentityMismatch: this member's Config.Identity differs from the Leader's. The
	// Leader refuses such a Follower, which is never served; the error names both.
	ErrIdentityMismatch = errors.New("cluster: service identity mismatch")
	// ErrLimit: the Leader refused a request or a connection because it would exceed
	// one of its Config.Limits; the error names the limit and its value. A refused
	// request was not run. A refused connection is retried, within their contexts, by
	// Join and by a member between Leaders; Join's error then names the limit.
	ErrLimit = errors.New("cluster: over a leader's limit")
	// ErrFDUnsupported: a Message with Files on a transport that cannot pass file
	// descriptors: the TCP transport, or any platform but Linux. Send the data inline,
	// or use the Unix-socket transport on Linux.
	ErrFDUnsupported = ipc.ErrFDUnsupported
)

// RemoteError is an error returned by the Leader's Service, or a panic in it that the
// Leader recovered, carried to the caller. It is returned the same way on the Leader
// itself, so code behaves identically in every role.
//
// The Service's error value does not cross the process boundary; its text does, and so
// do the codes of the errors registered in Config.Errors that it matches (errors.Is):
// a RemoteError unwraps to the receiving member's errors for those codes, so that
// errors.Is(err, ErrNotFound) holds on every member when ErrNotFound is registered. A
// recovered panic unwraps to ErrServicePanic. An error that matches no registered
// error unwraps to nothing.
type RemoteError struct {
	Op      string   // "invoke", "publish", "subscribe", "register" or "withdraw"
	Name    string   // the method or topic
	Message string   // the Service error's text
	Codes   []string // the codes (Config.Errors) the Service's error matched, sorted; nil if none
	errs    []error
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("cluster: %s %q: %s", e.Op, e.Name, e.Message)
}

// Unwrap returns the registered errors for e.Codes that this member knows, and
// ErrServicePanic for a panic.
func (e *RemoteError) Unwrap() []error { return e.errs }

// panicked reports whether e reports a panic in the Service.
func (e *RemoteError) panicked() bool { return slices.Contains(e.errs, ErrServicePanic) }

// detailError matches a sentinel without repeating the sentinel's text after its own,
// which already says what went wrong and what to do.
type detailError struct {
	msg string
	is  error
}

func (e *detailError) Error() string        { return e.msg }
func (e *detailError) Is(target error) bool { return target == e.is }

// tooLarge makes an error matching ErrTooLarge; its text says the size, the limit and
// the remedy, once.
func tooLarge(format string, args ...any) error {
	return &detailError{msg: fmt.Sprintf(format, args...), is: ErrTooLarge}
}

// timeoutError matches ErrTimeout and context.DeadlineExceeded and is a net.Error
// timeout, so net/http-style callers recognise it.
type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
func (e *timeoutError) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}

func errTimeout(op, name string) error {
	return &timeoutError{msg: fmt.Sprintf("cluster: %s %q: call timed out", op, name)}
}

// ctxErr turns a context's end into the error a caller sees.
func ctxErr(ctx context.Context, op, name string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errTimeout(op, name)
	}
	return fmt.Errorf("cluster: %s %q: %w", op, name, ctx.Err())
}

func isTimeout(err error) bool {
	var te *timeoutError
	return errors.As(err, &te)
}

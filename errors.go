package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/cluster-client-go/cluster/frame"
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
	// ErrTooLarge: a method, topic or payload exceeds the protocol's limits.
	ErrTooLarge = frame.ErrTooLarge
	// ErrProtocol: a peer broke the wire protocol.
	ErrProtocol = frame.ErrProtocol
	// ErrUnauthorized: this member is not let in: the Leader refused it (peer
	// credentials, token or cluster name), or the filesystem did (the Leader's socket or
	// the lock file is not accessible to this uid or its groups). The error names the
	// Config setting to change (AllowUIDs, AllowGIDs, SocketMode).
	ErrUnauthorized = errors.New("cluster: not authorized by the leader")
	// ErrNoLeader: no Leader could be reached before the context ended. The error says
	// what was found (who holds the lock, whether the socket exists or refuses).
	ErrNoLeader = errors.New("cluster: no leader reachable")
	// ErrConfig: the Config is invalid; the error names the field.
	ErrConfig = errors.New("cluster: invalid config")
)

// RemoteError is an error returned by the Leader's Service, carried to the caller with
// its message intact. It is returned the same way on the Leader itself, so code behaves
// identically in every role; the Service's original error value does not cross the
// process boundary and is therefore not unwrapped on either side.
type RemoteError struct {
	Op      string // "invoke", "publish" or "subscribe"
	Name    string // the method or topic
	Message string // the Service error's text
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("cluster: %s %q: %s", e.Op, e.Name, e.Message)
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

package cluster

import (
	"context"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// Service is the real client, the one that talks to the server. Only the Leader builds
// it (Config.NewService), once per leadership term; every member's calls end up here.
// Its methods are called concurrently.
type Service interface {
	// Invoke performs a request/response call. ctx carries the caller's deadline. req is
	// lent: its Blob and Files are valid until Invoke returns (Clone them to keep them).
	// The returned Message is given away: the library closes its Blob and Files once
	// they are sent, or hands them to the local caller, who owns them.
	Invoke(ctx context.Context, method string, req Message) (Message, error)
	// Subscribe starts the one real subscription for topic and returns a function that
	// cancels it. emit delivers each message; it never blocks and may be called from any
	// goroutine, including during Subscribe itself. The Service must not modify a
	// Message's Data after emitting it. emit takes the Message's Blob and Files: the
	// library closes them when no subscriber needs them any more, so emit each one once
	// (Clone to emit the same blob again). ctx bounds the Subscribe call only, not the
	// subscription's life.
	Subscribe(ctx context.Context, topic string, emit func(Message)) (cancel func(), err error)
	// Publish sends msg to topic on the server. msg is lent, as Invoke's req is.
	Publish(ctx context.Context, topic string, msg Message) error
	// Close releases the Service when its leadership term ends.
	Close() error
}

// Withdrawer is implemented by a Service that can take back a registration (see
// Client.Register): what a service registry calls unpublish or deregister. The Leader
// calls Withdraw with the topic and the Message that Publish registered, when the
// registering member withdraws it or when that member's connection ends (the member
// died or left). A Service that does not implement Withdrawer is never told; its
// registrations are still never replayed to later Leaders once withdrawn.
//
// Withdraw must undo exactly one earlier Publish of the same topic and payload: two
// members may register equal payloads, and withdrawing one must leave the other.
type Withdrawer interface {
	Withdraw(ctx context.Context, topic string, msg Message) error
}

// BatchInvoker is implemented by a Service that serves several Invoke calls at once
// more cheaply than one by one: a client that pipelines commands to its server, say.
// On the Leader, the calls that arrive together (the requests read at once from a
// Follower's connection, and the calls of any member, the Leader's own included, that
// arrive while a batch runs) reach InvokeBatch as one batch instead of one Invoke
// each. The goroutine that finds no batch running runs the batch and writes every
// reply itself.
//
// Batches start one after another, in the order their calls arrived, and a Follower's
// requests reach InvokeBatch in the order the Follower sent them (so a call made after
// another's answer came back follows it; one made after another timed out at the
// caller may not, as that one may still be on its way). A batch that runs longer
// than a millisecond no longer holds up the calls that arrive meanwhile: they
// start the next batch beside it, so InvokeBatch may then run concurrently with itself.
// Invoke is still called, concurrently with InvokeBatch, for InvokeOneway calls. When
// the leadership term ends, the calls no batch has taken yet go to the next Leader:
// no batch starts once the handover's drain is over, so none starts after Close.
//
// InvokeBatch answers each call with Call.Return before it returns; a call left
// unanswered fails with an error that says so. A panic in InvokeBatch fails every call
// of the batch with ErrServicePanic, as a panic in Invoke fails its call. ctx ends when
// the last caller's deadline passes (or the leadership term ends); each call's own
// deadline is its Context's. calls and the Calls are the library's: they must not be
// kept once InvokeBatch returns.
type BatchInvoker interface {
	InvokeBatch(ctx context.Context, calls []*Call)
}

// Call is one Invoke call of a batch (see BatchInvoker).
type Call struct {
	// Method is the method the caller invoked.
	Method string
	// Req is the request, lent as Invoke's req is: its Blob and Files are valid until
	// InvokeBatch returns.
	Req Message

	ctx   context.Context
	state atomic.Uint32 // callOpen, callWriting, callReturned or callSealed
	resp  Message
	err   error

	deadline time.Time // the caller's; zero: none

	// The Leader's bookkeeping: a Follower's request (pc), or the Leader's own call
	// (local, told when the call is answered).
	pc    *peerConn
	f     frame.Frame
	files []*os.File
	cc    *callCtx // nil without a deadline
	local chan struct{}
}

// The states of a Call's answer.
const (
	callOpen     = iota // not answered yet
	callWriting         // Return is storing the answer
	callReturned        // answered
	callSealed          // the batch is over unanswered: Return is too late
)

// Context carries the caller's deadline. A Follower's call's Context also ends when
// its connection or the leadership term ends; the Leader's own call's is the context
// its caller passed to Invoke (with the call's deadline), as Invoke's ctx is.
func (c *Call) Context() context.Context {
	if c.ctx == nil { // a Call made without NewCall
		return context.Background()
	}
	return c.ctx
}

// Return answers the call: resp is given away, as Invoke's response is, and err is
// what Invoke would have returned. Only the first Return counts; a later one, or one
// after InvokeBatch returned, closes resp and is otherwise ignored. Return may be
// called from any goroutine, but before InvokeBatch returns.
func (c *Call) Return(resp Message, err error) {
	if !c.state.CompareAndSwap(callOpen, callWriting) {
		_ = resp.Close()
		return
	}
	c.resp, c.err = resp, err
	c.state.Store(callReturned)
}

// NewCall returns a Call of method with req, whose Context is ctx, outside the Leader:
// for a Service whose Invoke serves a lone call as a batch of one, or for a test of
// InvokeBatch. Result reads its answer.
func NewCall(ctx context.Context, method string, req Message) *Call {
	return &Call{Method: method, Req: req, ctx: ctx}
}

// Result returns the call's answer, once InvokeBatch has returned: what Return was
// given, or an error if the call was left unanswered (from then on Return only closes
// its response).
func (c *Call) Result() (Message, error) {
	if !c.seal() {
		return Message{}, errUnanswered
	}
	return c.resp, c.err
}

// seal ends the time for Return and reports whether the call was answered.
func (c *Call) seal() bool {
	for {
		if c.state.CompareAndSwap(callOpen, callSealed) {
			return false
		}
		switch c.state.Load() {
		case callReturned:
			return true
		case callSealed:
			return false
		}
		runtime.Gosched() // a Return is storing its answer
	}
}

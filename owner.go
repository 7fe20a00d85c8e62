package cluster

import (
	"fmt"
	"time"

	"github.com/cluster-client-go/cluster/ipc"
)

// The Leader's state for a term belongs to one goroutine, the term's owner (leader.own):
// its Followers and observers, its topics and the Service's subscriptions of them, and
// each Follower's subscriptions and registrations with what they count against
// Config.Limits (the fields of peerConn marked so). Other goroutines hand the owner
// functions to run (leader.call). Those functions never block and never call the
// application's code: Service.Subscribe, its cancel function, Service.Publish of a
// registration and Withdrawer.Withdraw run on the goroutine that needs them, which hands
// the outcome back to the owner, so a Service that blocks in one of them holds up that
// call alone. A Follower's invoke (reader, worker, Service, response) and an emit never
// pass through the owner.

// termState is what the term's owner holds; only functions run by leader.own touch it.
type termState struct {
	stopping  bool      // set by shutdown before it snapshots conns: no Follower joins after
	drainBy   time.Time // set with stopping: when the handover stops waiting for anyone
	ended     bool      // the topics were closed for good: no Service subscription after
	conns     map[*ipc.Conn]*peerConn
	observers map[*ipc.Conn]bool // observers' connections (see observe.go); true: watching
	topics    map[string]*topic

	statusJSON []byte // the last status document (see statusDoc) and when it was made
	statusAt   time.Time
}

// ownerOp is a function for the term's owner, and what it closes once it has run it.
type ownerOp struct {
	fn   func(*termState)
	done chan struct{}
}

// errTermOver refuses what would start after the term's topics were closed: the next
// Leader takes it.
var errTermOver = fmt.Errorf("%w: the leader's term is over", errNotSent)

// own runs the functions handed to the term's owner, one at a time, until shutdown
// stops it.
func (l *leader) own() {
	defer close(l.ownDone)
	st := &termState{
		conns:     make(map[*ipc.Conn]*peerConn),
		observers: make(map[*ipc.Conn]bool),
		topics:    make(map[string]*topic),
	}
	for {
		select {
		case op := <-l.ops:
			op.fn(st)
			close(op.done)
		case <-l.ownStop:
			return
		}
	}
}

// call runs fn on the term's owner and returns once it has run. fn must not block. It
// reports false, and fn does not run, when the owner has ended with the term.
func (l *leader) call(fn func(*termState)) bool {
	op := ownerOp{fn: fn, done: make(chan struct{})}
	select {
	case l.ops <- op:
	case <-l.ownDone:
		return false
	}
	<-op.done
	return true
}

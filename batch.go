package cluster

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Batches: the Follower requests for a Service that is a BatchInvoker.
//
// A connection's reader holds the invoke requests of one read (while more frames are
// buffered, see peerConn.hold) and hands them to the term's batcher together. If no
// batch is running, the reader runs it on the spot (inside ipc.Conn.Inline, so that
// another goroutine takes over reading the connection if it blocks), writes every
// reply, and goes on with the batches of the requests that arrived meanwhile, from any
// connection, until none is left (or for batchStall at most). Otherwise the requests
// wait in pending for the running batch to end. The Leader's own calls join batches
// the same way, on the calling goroutine. A batch that runs past batchStall is overtaken: the stall
// timer hands what is pending to a new runner, so that a Service that blocks holds up
// the calls of one batch, not every call after it.

// batchStall is how long a batch runs before the calls that arrive after it no longer
// wait for it.
const batchStall = time.Millisecond

// errUnanswered fails a call that InvokeBatch returned without answering.
var errUnanswered = errors.New("BatchInvoker.InvokeBatch returned without answering this call (Call.Return)")

// batcher runs the batches of a term's BatchInvoker.
type batcher struct {
	l  *leader
	bi BatchInvoker

	mu      sync.Mutex // a leaf
	pending []*Call    // arrived, in order, for the next batch
	spare   []*Call    // a slice to take pending's place
	running bool       // a runner is current: it will take pending
	gen     uint64     // batches started; a runner whose batch is not the last was overtaken
	stall   *time.Timer
	stopped bool // the term ended: stall is disarmed, and every caller runs its calls
}

func newBatcher(l *leader, bi BatchInvoker) *batcher {
	b := &batcher{l: l, bi: bi}
	b.stall = time.AfterFunc(time.Hour, b.stalled)
	b.stall.Stop()
	return b
}

// submit queues calls, in order, and reports whether the caller must run them: no
// runner is current (or the term ended, see stop), and the caller now is (call run).
func (b *batcher) submit(calls []*Call) (run bool) {
	b.mu.Lock()
	b.pending = append(b.pending, calls...)
	run = !b.running || b.stopped
	b.running = true
	b.mu.Unlock()
	return run
}

// run runs batches until none is pending, or until it is overtaken. A runner that has
// run batches for batchStall hands the rest to a new goroutine: its own caller (a
// connection's reader, or the Leader's own call) waits no longer than that for others.
func (b *batcher) run() {
	start := time.Now()
	b.mu.Lock()
	for len(b.pending) > 0 {
		if time.Since(start) > batchStall {
			b.mu.Unlock()
			go b.run() // still the current runner: running stays true
			return
		}
		calls := b.pending
		b.pending, b.spare = b.spare, nil
		b.gen++
		g := b.gen
		if !b.stopped {
			b.stall.Reset(batchStall)
		}
		b.mu.Unlock()
		b.l.runBatch(b.bi, calls)
		clear(calls)
		b.mu.Lock()
		if b.spare == nil {
			b.spare = calls[:0]
		}
		if b.gen != g { // overtaken: the stall timer started another runner
			b.mu.Unlock()
			return
		}
	}
	b.stall.Stop()
	b.running = false
	b.mu.Unlock()
}

// stalled runs when a batch has run for batchStall: the calls pending, and those that
// arrive later, no longer wait for it.
func (b *batcher) stalled() {
	b.mu.Lock()
	if !b.running || b.stopped {
		b.mu.Unlock()
		return
	}
	b.gen++ // the current runner's batch is not the last any more
	b.running = len(b.pending) > 0
	run := b.running
	b.mu.Unlock()
	if run {
		b.run()
	}
}

// stop disarms the stall timer for good at the end of the term: its callback, if it
// fired before, starts no runner, and no batch arms it again. What a stall would have
// done is done now and for the calls submitted later (requests read before the term
// ended): they do not wait for a batch that still runs (one the drain did not wait
// for), a new runner takes those pending and each later caller runs its own.
func (b *batcher) stop() {
	b.mu.Lock()
	b.stopped = true
	b.stall.Stop()
	run := b.running && len(b.pending) > 0
	b.mu.Unlock()
	if run {
		go b.run()
	}
}

// runBatch runs calls as one batch and answers each.
func (l *leader) runBatch(bi BatchInvoker, calls []*Call) {
	ctx, latest := l.ctx, time.Time{}
	for _, c := range calls {
		if c.deadline.IsZero() {
			latest = time.Time{}
			break
		}
		if c.deadline.After(latest) {
			latest = c.deadline
		}
	}
	var bc *callCtx
	if !latest.IsZero() {
		bc = withDeadline(l.ctx, latest)
		ctx = bc
	}
	err := l.svc.invokeBatch(ctx, bi, calls)
	if bc != nil {
		bc.end()
	}
	for _, c := range calls {
		answered := c.seal()
		resp, cerr := c.resp, c.err
		if err != nil {
			if answered {
				_ = resp.Close()
			}
			resp, cerr = Message{}, err
		} else if !answered {
			cerr = errUnanswered
		}
		if c.local != nil {
			c.resp, c.err = resp, cerr
			c.local <- struct{}{}
			continue
		}
		c.pc.answer(c, resp, cerr)
	}
}

// invokeBatched is the Leader's own call of a BatchInvoker: it joins a batch, as a
// Follower's would, and waits for its answer.
func (l *leader) invokeBatched(ctx context.Context, method string, req Message) (Message, error) {
	c := &Call{Method: method, Req: lend(req), ctx: ctx, local: make(chan struct{}, 1)}
	c.deadline, _ = ctx.Deadline()
	if l.batch.submit([]*Call{c}) {
		l.batch.run()
	}
	<-c.local // the request is lent until then, as to Invoke
	return c.resp, c.err
}

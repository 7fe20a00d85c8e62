package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Batches: the Follower requests for a Service that is a BatchInvoker.
//
// A connection's reader holds the invoke requests of one read (while more frames are
// buffered, see peerConn.hold) and hands them to the term's batcher together. If no
// batch is running, the reader runs it on the spot (inside ipc.Conn.Inline, so that
// another goroutine takes over reading the connection if it blocks; or on a new
// goroutine when the reader must wait for a place, see peerConn.flushAside), writes
// every reply, and goes on with the batches of the requests that arrived meanwhile,
// from any connection, until none is left (or for batchStall at most). Otherwise the
// requests wait in pending for the running batch to end. The Leader's own calls join
// batches the same way, on the calling goroutine. A batch that has been in InvokeBatch
// for batchStall is overtaken: the stall timer hands what is pending to a new runner,
// so that a Service that blocks holds up the calls of one batch, not every call after
// it.

// batchStall is how long a batch runs before the calls that arrive after it no longer
// wait for it. A variable for tests (export_test.go), which set it while no cluster
// runs.
var batchStall = time.Millisecond

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
	// entered is the gen of the batch in InvokeBatch, 0 when none is: the stall timer
	// overtakes only that batch (not one that has not reached InvokeBatch, so that
	// batches reach it in order, nor one that has returned, whose runner goes on).
	entered atomic.Uint64
	stopped bool // the term ended: no batch starts, calls are refused (see stop)
}

func newBatcher(l *leader, bi BatchInvoker) *batcher {
	b := &batcher{l: l, bi: bi}
	b.stall = time.AfterFunc(time.Hour, b.stalled)
	b.stall.Stop()
	return b
}

// submit queues calls, in order, and reports whether the caller must run them: no
// runner is current, and the caller now is (call run). Once the term has ended (see
// stop) it refuses them instead, and reports false.
func (b *batcher) submit(calls []*Call) (run bool) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		b.l.refuseBatched(calls)
		return false
	}
	b.pending = append(b.pending, calls...)
	run = !b.running
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
		b.mu.Unlock()
		b.runBatch(calls, g)
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
	if !b.running || b.stopped || b.entered.Load() != b.gen {
		// Nothing runs, or the current batch has not reached InvokeBatch (its runner
		// was not scheduled since it took it): it arms the timer again when it does.
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

// stop ends batching at the end of the term, once the drain is over or has timed out,
// before Service.Close: no batch starts after it. The calls pending, which no batch
// has taken, and any submitted later (requests read before the term ended) are refused
// as the term's end refuses a request (the Follower sends it to the next Leader, the
// Leader's own call goes there too): the Service never saw them. The stall timer is
// disarmed for good; a batch that still runs (one the drain did not wait for) ends on
// its own, and its calls are answered as it returns.
func (b *batcher) stop() {
	b.mu.Lock()
	b.stopped = true
	b.stall.Stop()
	refused := b.pending
	b.pending = nil
	b.mu.Unlock()
	b.l.refuseBatched(refused)
}

// refuseBatched answers calls that no batch took with errTermOver.
func (l *leader) refuseBatched(calls []*Call) {
	for _, c := range calls {
		c.seal()
		l.settleCall(c, Message{}, errTermOver)
	}
}

// runBatch runs calls, batch g, and answers each. The stall timer starts as the batch
// reaches InvokeBatch.
func (b *batcher) runBatch(calls []*Call, g uint64) {
	l := b.l
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
	b.entered.Store(g)
	b.stall.Reset(batchStall)
	err := l.svc.invokeBatch(ctx, b.bi, calls)
	b.entered.CompareAndSwap(g, 0) // out of InvokeBatch: nothing for the stall timer to overtake
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
		l.settleCall(c, resp, cerr)
	}
}

// settleCall gives a call of a batch its outcome: to the Leader's own caller, or as the
// answer to a Follower's request.
func (l *leader) settleCall(c *Call, resp Message, err error) {
	if c.local != nil {
		c.resp, c.err = resp, err
		c.local <- struct{}{}
		return
	}
	c.pc.answer(c, resp, err)
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

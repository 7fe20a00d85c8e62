package cluster

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// batchProbe answers every call of a batch, and counts the batches.
type batchProbe struct {
	batches int // batches run; the tests run them one at a time
}

func (p *batchProbe) InvokeBatch(_ context.Context, calls []*Call) {
	p.batches++
	for _, c := range calls {
		c.Return(Message{Data: []byte(c.Method)}, nil)
	}
}

// newBatchProbe returns a batcher of a term whose Service is a batchProbe.
func newBatchProbe() (*batcher, *batchProbe) {
	l := &leader{ctx: context.Background(), svc: service{c: &Client{}}}
	p := &batchProbe{}
	l.batch = newBatcher(l, p)
	return l.batch, p
}

// localCall is a call as the Leader's own Invoke makes it.
func localCall(method string) *Call {
	return &Call{Method: method, ctx: context.Background(), local: make(chan struct{}, 1)}
}

// outcome waits for c's answer and returns its error.
func outcome(t *testing.T, c *Call) error {
	t.Helper()
	select {
	case <-c.local:
	case <-time.After(time.Minute):
		t.Fatalf("call %q was not answered", c.Method)
	}
	return c.err
}

// answered waits for c's answer and checks it is the probe's.
func answered(t *testing.T, c *Call) {
	t.Helper()
	require.NoError(t, outcome(t, c))
	require.Equal(t, c.Method, string(c.resp.Data))
}

// running marks b's runner current, as it is while a batch runs that outlives the
// drain at the end of a term.
func running(b *batcher) {
	b.mu.Lock()
	b.running = true
	b.mu.Unlock()
}

// refused waits for c's answer and checks the term's end refused it.
func refused(t *testing.T, c *Call) {
	t.Helper()
	err := outcome(t, c)
	require.ErrorIs(t, err, errTermOver)
	require.ErrorIs(t, err, errNotSent, "the caller sends it to the next Leader")
}

// Once the term ended, no batch starts: a call submitted while a batch still runs is
// refused at once, and a callback of the stall timer that fired before the end starts
// no runner.
func TestEndedTermsBatcherStartsNoBatch(t *testing.T) {
	b, p := newBatchProbe()
	c := localCall("before")
	require.True(t, b.submit([]*Call{c}), "no batch runs: the caller runs it")
	b.run()
	answered(t, c)
	require.Equal(t, 1, p.batches)

	running(b)
	b.stall.Reset(time.Hour) // as a batch that still runs leaves it
	b.stop()
	require.False(t, b.stall.Stop(), "stop disarms the stall timer")

	c = localCall("after")
	require.False(t, b.submit([]*Call{c}), "after the end nobody runs a batch")
	refused(t, c)
	b.mu.Lock()
	gen := b.gen
	b.mu.Unlock()
	b.stalled() // a callback that fired before stop and ran after it
	b.mu.Lock()
	pending, after := len(b.pending), b.gen
	b.mu.Unlock()
	require.Zero(t, pending)
	require.Equal(t, gen, after, "the timer's callback overtook the batch after the end")
	require.Equal(t, 1, p.batches, "the Service saw a call after the end")
}

// A call that waits for a batch when the term ends is refused, not run: the batch it
// waited for may outlive the drain, and the Service is closed next.
func TestEndOfTermRefusesTheCallsPendingBehindABatch(t *testing.T) {
	b, p := newBatchProbe()
	running(b)
	c := localCall("pending")
	require.False(t, b.submit([]*Call{c}), "a call waits for the batch that runs")
	b.stop()
	refused(t, c)
	require.Zero(t, p.batches)

	// The batch that ran on ends as it would have: no runner is left behind.
	b.run()
	b.mu.Lock()
	defer b.mu.Unlock()
	require.False(t, b.running)
}

// The stall timer overtakes a batch only once it has reached InvokeBatch: a timer that
// fires while the current runner has taken its batch but not yet run it (it was not
// scheduled) starts no batch, which would reach InvokeBatch before it.
func TestStallOvertakesOnlyABatchThatStarted(t *testing.T) {
	b, p := newBatchProbe()
	running(b)
	b.mu.Lock()
	b.gen++ // the current runner took a batch, not run yet
	b.mu.Unlock()
	later := localCall("later")
	require.False(t, b.submit([]*Call{later}), "a runner is current")

	b.stalled()
	b.mu.Lock()
	gen, pending := b.gen, len(b.pending)
	b.mu.Unlock()
	require.Equal(t, uint64(1), gen, "a batch that has not started was overtaken")
	require.Equal(t, 1, pending)
	require.Zero(t, p.batches)

	b.entered.Store(1) // it reached InvokeBatch, and runs on
	b.stalled()
	answered(t, later)
	require.Equal(t, 1, p.batches, "the call after a batch that stalls runs beside it")
}

// gateProbe counts the batches inside InvokeBatch at once; a batch whose first call is
// "blocks" waits there until the test ends.
type gateProbe struct {
	release      chan struct{}
	inside, most atomic.Int32
}

func (p *gateProbe) InvokeBatch(_ context.Context, calls []*Call) {
	n := p.inside.Add(1)
	for m := p.most.Load(); n > m && !p.most.CompareAndSwap(m, n); m = p.most.Load() {
	}
	if calls[0].Method == "blocks" {
		<-p.release
	}
	p.inside.Add(-1)
	for _, c := range calls {
		c.Return(Message{Data: []byte(c.Method)}, nil)
	}
}

// newGate returns a batcher whose Service is a gateProbe and whose stall timer never
// fires on its own, after a first batch that ran and returned.
func newGate(t *testing.T) (*batcher, *gateProbe) {
	SetBatchStall(t, time.Hour)
	l := &leader{ctx: context.Background(), svc: service{c: &Client{}}}
	p := &gateProbe{release: make(chan struct{})}
	l.batch = newBatcher(l, p)
	t.Cleanup(func() { // before SetBatchStall's: the runners are done with batchStall
		close(p.release)
		require.Eventually(t, func() bool {
			l.batch.mu.Lock()
			defer l.batch.mu.Unlock()
			return !l.batch.running
		}, time.Minute, time.Millisecond)
	})
	first := localCall("first")
	require.True(t, l.batch.submit([]*Call{first}))
	l.batch.run()
	answered(t, first)
	return l.batch, p
}

// oneRunner checks, after giving a wrongly started second runner time to show, that
// one batch at a time was in InvokeBatch (none has run for batchStall) and that a
// runner is still current.
func oneRunner(t *testing.T, b *batcher, p *gateProbe) {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	require.LessOrEqual(t, p.most.Load(), int32(1), "batches ran beside one another before any stalled")
	b.mu.Lock()
	defer b.mu.Unlock()
	require.True(t, b.running, "no runner is current while a batch runs")
}

// A stall timer armed by a batch that has returned overtakes nothing: its runner
// goes on. Here it fires while that runner, having run batches for batchStall, hands
// the rest to a new goroutine not scheduled yet.
func TestAStallOfAReturnedBatchOvertakesNothing(t *testing.T) {
	b, p := newGate(t)
	running(b) // the first batch's runner handed on (go b.run())
	b.submit([]*Call{localCall("blocks")})
	go b.stalled()                    // the first batch's timer
	time.Sleep(50 * time.Millisecond) // for a wrong overtake to start its runner
	b.submit([]*Call{localCall("after")})
	go b.run() // the goroutine handed on, scheduled at last
	oneRunner(t, b, p)
}

// The same timer firing after a reader submitted calls (it must run them) and before
// the goroutine it runs them on (flushAside) is scheduled starts no second runner.
func TestAStaleStallBeforeARunnerStartsOvertakesNothing(t *testing.T) {
	b, p := newGate(t)
	require.True(t, b.submit([]*Call{localCall("blocks")}), "no runner: the caller must run")
	go b.stalled()                    // the first batch's timer
	time.Sleep(50 * time.Millisecond) // for a wrong overtake to start its runner
	go b.run()
	require.Eventually(t, func() bool { return p.inside.Load() == 1 }, time.Minute, time.Millisecond)
	if b.submit([]*Call{localCall("after")}) {
		go b.run()
	}
	oneRunner(t, b, p)
}

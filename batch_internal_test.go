package cluster

import (
	"context"
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

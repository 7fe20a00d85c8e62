package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// stallProbe answers every call of a batch, and records whether its batcher's stall
// timer was armed while a batch ran.
type stallProbe struct {
	b       *batcher
	batches int // batches run; the test runs them one at a time
	armed   bool
}

func (p *stallProbe) InvokeBatch(_ context.Context, calls []*Call) {
	p.batches++
	p.armed = p.armed || p.b.stall.Stop()
	for _, c := range calls {
		c.Return(Message{Data: []byte(c.Method)}, nil)
	}
}

// newStallProbe returns a batcher of a term whose Service is a stallProbe.
func newStallProbe() (*batcher, *stallProbe) {
	l := &leader{ctx: context.Background(), svc: service{c: &Client{}}}
	p := &stallProbe{}
	l.batch = newBatcher(l, p)
	p.b = l.batch
	return l.batch, p
}

// localCall is a call as the Leader's own Invoke makes it.
func localCall(method string) *Call {
	return &Call{Method: method, ctx: context.Background(), local: make(chan struct{}, 1)}
}

// answered waits for c's answer and checks it is the probe's.
func answered(t *testing.T, c *Call) {
	t.Helper()
	select {
	case <-c.local:
	case <-time.After(time.Minute):
		t.Fatalf("call %q was not answered", c.Method)
	}
	require.NoError(t, c.err)
	require.Equal(t, c.Method, string(c.resp.Data))
}

// running marks b's runner current, as it is while a batch runs that outlives the
// drain at the end of a term.
func running(b *batcher) {
	b.mu.Lock()
	b.running = true
	b.mu.Unlock()
}

// Once the term ended, the stall timer is disarmed for good: a call submitted while a
// batch still runs is run by its caller at once, without arming the timer, and a
// callback of the timer that fired before the end starts no runner.
func TestEndedTermsBatcherArmsNoStallTimer(t *testing.T) {
	b, p := newStallProbe()
	running(b)
	b.stop()
	require.False(t, b.stall.Stop(), "stop disarms the stall timer")

	c := localCall("after")
	require.True(t, b.submit([]*Call{c}), "after the end a caller does not wait for the batch that runs")
	b.run()
	answered(t, c)
	require.Equal(t, 1, p.batches)
	require.False(t, p.armed, "a batch run after the end armed the stall timer")

	running(b)
	c = localCall("late")
	b.submit([]*Call{c})
	b.stalled() // a callback that fired before stop and ran after it
	b.mu.Lock()
	pending, gen := len(b.pending), b.gen
	b.mu.Unlock()
	require.Equal(t, 1, pending, "the timer's callback ran the calls pending after the end")
	require.EqualValues(t, 1, gen, "the timer's callback overtook the batch after the end")
	b.run()
	answered(t, c)
	require.False(t, p.armed)
}

// A call that waits for a batch when the term ends is handed to a new runner, as the
// stall timer would have done: the batch it waited for may outlive the drain.
func TestEndOfTermRunsTheCallsPendingBehindABatch(t *testing.T) {
	b, p := newStallProbe()
	running(b)
	c := localCall("pending")
	require.False(t, b.submit([]*Call{c}), "a call waits for the batch that runs")
	b.stop()
	answered(t, c)
	require.Equal(t, 1, p.batches)
	require.False(t, p.armed)
}

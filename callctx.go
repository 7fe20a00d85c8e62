package cluster

import (
	"context"
	"sync"
	"time"
)

// callCtx is a context with a deadline for one call, made cheaply: context.WithTimeout
// costs a timer, a channel and a registration with its parent per call, while most
// calls never wait on their context's Done (the Follower's wait has a timer of its own,
// see deadlineOf, and many Services never look). callCtx arms its timer and its parent
// watch only when Done is first called; Err works without them. It ends when the
// deadline passes, when the parent ends, or when its owner calls end (the call is
// over), like a context.WithDeadline and its cancel func.
type callCtx struct {
	parent   context.Context
	deadline time.Time

	mu         sync.Mutex
	done       chan struct{} // made by the first Done
	err        error         // set once; with done made, only together with closing it
	timer      *time.Timer
	stopParent func() bool
}

// withDeadline returns a callCtx under parent ending at d, and the func that ends it.
// parent must have no earlier deadline of its own (callers check).
func withDeadline(parent context.Context, d time.Time) *callCtx {
	return &callCtx{parent: parent, deadline: d}
}

func (c *callCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *callCtx) Value(key any) any { return c.parent.Value(key) }

func (c *callCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.done != nil {
		return c.err // with done made, err is set exactly when done is closed
	}
	if err := c.parent.Err(); err != nil {
		c.err = err
	} else if !time.Now().Before(c.deadline) {
		c.err = context.DeadlineExceeded
	}
	return c.err
}

func (c *callCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	if c.err == nil {
		if err := c.parent.Err(); err != nil {
			c.err = err
		} else if d := time.Until(c.deadline); d <= 0 {
			c.err = context.DeadlineExceeded
		}
	}
	if c.err != nil {
		close(c.done)
		return c.done
	}
	c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	c.stopParent = context.AfterFunc(c.parent, func() { c.cancel(c.parent.Err()) })
	return c.done
}

// cancel ends c with err, unless it has ended.
func (c *callCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
		c.timer.Stop()
		c.stopParent()
	}
}

// end is the owner's cancel: the call is over.
func (c *callCtx) end() { c.cancel(context.Canceled) }

func (c *callCtx) String() string { return "cluster.callCtx" }

// deadlineOf splits ctx for a wait that brings its own timer: a callCtx gives its
// parent and its deadline, so that waiting does not arm the callCtx's own timer;
// another ctx is returned as is, with no extra deadline.
func deadlineOf(ctx context.Context) (context.Context, time.Time) {
	if c, ok := ctx.(*callCtx); ok {
		return c.parent, c.deadline
	}
	return ctx, time.Time{}
}

package ipc

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

type call struct {
	ch chan result
}

type result struct {
	f     frame.Frame
	files []*os.File // descriptors passed with a response; owned by whoever holds the result
	err   error
}

var callPool = sync.Pool{New: func() any { return &call{ch: make(chan result, 1)} }}

// Call sends a request of kind with a fresh id and waits for its response. timeout is
// carried in the header for the peer (milliseconds, 0 for none); the wait itself is
// bounded by ctx. An error frame from the peer is returned as a *FrameError. If the Conn
// ends first the error wraps ErrConnLost and the Conn's cause; if ctx ends first,
// ctx.Err() is returned and a late response is discarded. A failure before the request
// was queued also matches ErrNotSent. A response that passes file descriptors is an
// error matching ErrUnexpectedFiles (the descriptors are closed): use CallFiles.
func (c *Conn) Call(ctx context.Context, kind frame.Kind, timeout uint32, meta, body []byte) (frame.Frame, error) {
	r := c.call(ctx, time.Time{}, frame.Header{Kind: kind, Timeout: timeout}, meta, body, nil, nil)
	if len(r.files) > 0 {
		closeFiles(r.files)
		return frame.Frame{}, fmt.Errorf("%w: the %s to request %d passes %d; use CallFiles", ErrUnexpectedFiles, r.f.Kind, r.f.ID, len(r.files))
	}
	return r.f, r.err
}

// CallFiles is Call with files passed alongside the request (see SendFiles: they are
// duplicated, so the caller may close them when CallFiles returns) and returning the
// files passed with the response, which the caller then owns and must close. files may
// be empty, and the response may carry none (nil). On error no files are returned.
func (c *Conn) CallFiles(ctx context.Context, kind frame.Kind, timeout uint32, meta, body []byte, files []*os.File) (frame.Frame, []*os.File, error) {
	return c.CallHeader(ctx, frame.Header{Kind: kind, Timeout: timeout}, meta, body, files)
}

// CallHeader is CallFiles for a request that needs header flags: Kind, Flags and
// Timeout of h are used, the id is assigned and FDs set from files.
func (c *Conn) CallHeader(ctx context.Context, h frame.Header, meta, body []byte, files []*os.File) (frame.Frame, []*os.File, error) {
	return c.CallHeaderUntil(ctx, time.Time{}, h, meta, body, files)
}

// CallHeaderUntil is CallHeader with a deadline of its own besides ctx's (zero for
// none): when it passes first, the call returns context.DeadlineExceeded as if ctx had
// expired. It saves a caller who would otherwise derive a context per call for the
// deadline the cost of one.
func (c *Conn) CallHeaderUntil(ctx context.Context, deadline time.Time, h frame.Header, meta, body []byte, files []*os.File) (frame.Frame, []*os.File, error) {
	return c.CallParts(ctx, deadline, h, meta, body, nil, files)
}

// CallParts is CallHeaderUntil with the request's body in two parts, body then tail
// (see SendParts).
func (c *Conn) CallParts(ctx context.Context, deadline time.Time, h frame.Header, meta, body, tail []byte, files []*os.File) (frame.Frame, []*os.File, error) {
	fds, err := c.dupFiles(files)
	if err != nil {
		return frame.Frame{}, nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	r := c.call(ctx, deadline, frame.Header{Kind: h.Kind, Flags: h.Flags, Timeout: h.Timeout}, meta, body, tail, fds)
	return r.f, r.files, r.err
}

// timerPool holds stopped timers for calls' deadlines.
var timerPool sync.Pool

func getTimer(d time.Duration) *time.Timer {
	if t, ok := timerPool.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// putTimer stops t and pools it; since Go 1.23 a stopped timer's channel delivers no
// stale value, so the next user can Reset it.
func putTimer(t *time.Timer) {
	t.Stop()
	timerPool.Put(t)
}

// call sends a request with a fresh id and waits for its answer, until ctx ends or
// deadline (zero: none) passes. It takes ownership of fds. A result with an error
// carries no files.
func (c *Conn) call(ctx context.Context, deadline time.Time, h frame.Header, meta, body, tail []byte, fds []int) result {
	id := c.nextID.Add(1)
	h.ID = id
	cl := callPool.Get().(*call)
	c.pmu.Lock()
	select {
	case <-c.done:
		c.pmu.Unlock()
		callPool.Put(cl)
		closeFDs(fds)
		return result{err: fmt.Errorf("%w: %w", ErrNotSent, c.lostErr())}
	default:
	}
	c.pending[id] = cl
	alone := len(c.pending) == 1
	c.pmu.Unlock()

	if err := c.send(h, meta, body, tail, fds, false, alone); err != nil {
		c.forget(id, cl)
		return result{err: fmt.Errorf("%w: %w", ErrNotSent, err)}
	}
	if alone && c.opts.CallerReads && c.lend.CompareAndSwap(lendFree, lendCaller) {
		if r, ok := c.readOwn(ctx, deadline, cl); ok {
			callPool.Put(cl)
			return r
		}
	}
	var expired <-chan time.Time
	if !deadline.IsZero() {
		t := getTimer(time.Until(deadline))
		defer putTimer(t)
		expired = t.C
	}
	select {
	case r := <-cl.ch:
		callPool.Put(cl)
		return r
	case <-ctx.Done():
		c.forget(id, cl)
		return result{err: ctx.Err()}
	case <-expired:
		c.forget(id, cl)
		return result{err: context.DeadlineExceeded}
	}
}

// forget removes a call that its caller abandoned. If a result raced in, it is drained
// (closing any files it passed) so the pooled call is clean for its next user.
func (c *Conn) forget(id uint64, cl *call) {
	c.pmu.Lock()
	_, ok := c.pending[id]
	delete(c.pending, id)
	c.pmu.Unlock()
	if !ok {
		r := <-cl.ch // the completer removed it and has sent (or is about to send) exactly once
		closeFiles(r.files)
	}
	callPool.Put(cl)
}

// complete hands r to the caller waiting for request id; if there is none (the call was
// abandoned), r's files are closed.
func (c *Conn) complete(id uint64, r result) {
	c.pmu.Lock()
	cl, ok := c.pending[id]
	delete(c.pending, id)
	c.pmu.Unlock()
	if ok {
		cl.ch <- r
	} else {
		closeFiles(r.files)
	}
}

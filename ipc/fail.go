package ipc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// Failing: failed is set once, by compare-and-swap, before the error frame is queued;
// from then on nothing more is dispatched and the Conn's cause is failed's. Both Fail's
// goroutine and the reader, when it stops, end a failing Conn (endAfterFlush): failEnd
// runs that once, and the second caller waits for the first.

// failFlush bounds how long a failing Conn waits for its error frame, and what was
// queued before it, to be written before it closes.
const failFlush = 100 * time.Millisecond

// Fail ends the Conn because the peer broke a rule: it sends the peer an error frame
// with id 0, code as its meta and cause's text as its body, then closes the Conn with
// cause, after the frame (and whatever was queued before it) is written or after 100
// ms, whichever comes first. From the call on, no further frame is dispatched, and the
// Conn's cause (Err, and what pending calls fail with) is cause, whatever else happens
// meanwhile. It returns at once, and is safe to call from a Handler. On a Conn that
// has ended, or is already failing, it does nothing.
//
// The receive side fails this way on its own when the peer breaks the protocol (errors
// matching frame.ErrProtocol, code protocol, or frame.ErrVersion, code version), sends
// a frame over its limits (frame.ErrTooLarge, code too-large) or does not complete a
// frame within Options.FrameTimeout (ErrFrameTimeout, code limit).
func (c *Conn) Fail(code string, cause error) {
	if cause == nil {
		cause = fmt.Errorf("failed with error code %s", code)
	}
	if c.fail(code, cause) {
		go c.endAfterFlush()
	}
}

// fail makes cause the Conn's cause and queues the error frame for the peer; it reports
// whether it did, that is whether the Conn was open and not failing yet. The caller
// then sees that the Conn ends (endAfterFlush).
func (c *Conn) fail(code string, cause error) bool {
	if c.Err() != nil || !c.failed.CompareAndSwap(nil, &cause) {
		return false
	}
	_ = c.send(frame.Header{Kind: frame.KindError}, []byte(code), []byte(cause.Error()), nil, nil, false, true)
	return true
}

// endAfterFlush closes a failing Conn once everything queued has been written, or
// failFlush has passed, or the Conn has ended otherwise.
func (c *Conn) endAfterFlush() {
	c.failEnd.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), failFlush)
		defer cancel()
		_ = c.waitFlushed(ctx)
		c.Abort(*c.failed.Load())
	})
}

// violationCode is the error code that tells the peer why reading ended with err, if
// it ended because of the peer; "" otherwise.
func violationCode(err error) string {
	switch {
	case errors.Is(err, frame.ErrVersion):
		return frame.CodeVersion
	case errors.Is(err, frame.ErrProtocol):
		return frame.CodeProtocol
	case errors.Is(err, frame.ErrTooLarge):
		return frame.CodeTooLarge
	case errors.Is(err, ErrFrameTimeout):
		return frame.CodeLimit
	}
	return ""
}

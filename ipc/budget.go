package ipc

import (
	"errors"
	"sync"
)

// A Budget bounds the memory that incomplete frames hold, across every Conn that
// shares it (Options.Budget). A frame over 64 KiB is read into a buffer that grows
// with the bytes received (to at most eight times what the peer has sent of it); the
// bytes of that buffer beyond the first 64 KiB count against the Budget from the
// moment they are allocated until the frame is complete (the Handler then owns them,
// and they no longer count) or its Conn ends.
//
// A Conn whose frame needs more than the Budget has left stops reading until enough
// is released, or until the Conn ends: the peer's writes then block in the kernel.
// Options.FrameTimeout bounds that wait along with the rest of the frame. Without it,
// frames that together need more than the Budget can wait for one another forever;
// with it, those that run out of time are dropped and the others go on.
//
// A frame that needs more than the whole Budget could never be read: it fails its
// Conn with an error matching frame.ErrTooLarge.
type Budget struct {
	limit int64

	mu    sync.Mutex // a leaf: held while taking no other lock
	used  int64
	freed chan struct{} // made by a reader that waits; closed (and cleared) by the next release
}

// NewBudget returns a Budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// InUse returns the bytes held now by incomplete frames.
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// take reserves n bytes if the Budget has them, and else returns a channel closed when
// bytes are next released.
func (b *Budget) take(n int64) (freed <-chan struct{}, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n <= b.limit {
		b.used += n
		return nil, true
	}
	if b.freed == nil {
		b.freed = make(chan struct{})
	}
	return b.freed, false
}

// release gives back n bytes and wakes every reader that waits for some.
func (b *Budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.freed != nil {
		close(b.freed)
		b.freed = nil
	}
}

// errBudgetWait is returned by step to a caller reading its own response (see role.go)
// when the frame it reads needs Budget bytes that are not free: the caller leaves the
// reading role, and the reader goroutine waits for them. Like a deadline, it loses
// nothing of the frame.
var errBudgetWait = errors.New("ipc: waiting for budget")

// reserve makes the frame being read hold the Budget's bytes for a buffer of n bytes:
// all of them above freeFrame. If they are not free, the reader goroutine waits for
// them (or for the Conn's end), and a reading caller returns errBudgetWait.
func (r *frameReader) reserve(n int) error {
	b, p := r.c.opts.Budget, &r.part
	need := int64(n-freeFrame) - p.reserved
	if b == nil || need <= 0 {
		return nil
	}
	for {
		freed, ok := b.take(need)
		if ok {
			p.reserved += need
			return nil
		}
		if r.c.lend.Load() == lendCaller {
			return errBudgetWait
		}
		select {
		case <-freed:
		case <-r.c.done:
			return r.c.lostErr()
		}
	}
}

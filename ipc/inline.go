package ipc

import (
	"sync"
	"sync/atomic"
	"time"
)

// Inline runs fn on the calling goroutine, which must be the reader (a Handler calling
// it), and reports whether this goroutine is still the reader when fn returns. While fn
// runs, the connection's next frames wait; once after has elapsed, another goroutine
// may take over reading, and then fn finishes on this one, which stops reading when the
// Handler returns.
//
// It lets a Handler answer a quick request where the request was read, with no
// goroutine switch (on a small machine the switch, which wakes another thread, costs
// as much as the rest of the round trip), while a request that blocks holds up the
// connection for about after, rounded up to the watch's tick (half a millisecond, or up
// to 5 ms when it follows a run of quick requests: see inlineTick) and the latency of
// the runtime's timers (up to a millisecond in an otherwise idle process).
func (c *Conn) Inline(after time.Duration, fn func()) (quick bool) {
	gen := c.role.Load() &^ 1
	if !c.watched {
		c.watched = true
		watch.add(c)
	}
	c.inlineEnd.Store(monotonic() + int64(after))
	c.role.Store(gen | 1)
	watch.busy.Add(1)
	if !watch.armed.Load() {
		watch.arm()
	}
	fn()
	return c.role.CompareAndSwap(gen|1, gen)
}

// inlineTick is how often the watch looks for Inline functions past their time while
// one is running. While every Inline function returns before a tick finds it running,
// the period doubles, up to inlineTickMax: a timer that fires makes the runtime wake a
// thread, and on a small machine a wake-up every half millisecond costs a stream of
// quick requests a good part of its speed. So a function that blocks after a run of
// quick ones holds up its connection for up to inlineTickMax; once a tick finds a
// function running, the period is back to inlineTick.
const (
	inlineTick    = 500 * time.Microsecond
	inlineTickMax = 5 * time.Millisecond
)

// watch is the process's one watchdog of Inline functions: a timer that ticks while
// Conns run them and stops when none has for a tick, so that an idle process has no
// timer running and a busy one pays an atomic add per Inline call, not a timer.
var watch inlineWatch

type inlineWatch struct {
	busy  atomic.Int64 // Inline calls since the last tick
	armed atomic.Bool  // the timer is set, or a tick is running

	mu     sync.Mutex
	conns  map[*Conn]struct{} // open Conns that have run Inline
	timer  *time.Timer
	period time.Duration // the timer's period now: inlineTick up to inlineTickMax
}

func (w *inlineWatch) add(c *Conn) {
	w.mu.Lock()
	if w.conns == nil {
		w.conns = make(map[*Conn]struct{})
	}
	w.conns[c] = struct{}{}
	w.mu.Unlock()
}

func (w *inlineWatch) remove(c *Conn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
}

// arm sets the timer unless it is set.
func (w *inlineWatch) arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.armed.Load() {
		return
	}
	w.armed.Store(true)
	w.period = inlineTick
	if w.timer == nil {
		w.timer = time.AfterFunc(inlineTick, w.tick)
	} else {
		w.timer.Reset(inlineTick)
	}
}

// tick hands the reading role of every Conn whose Inline function is past its time to
// a new goroutine, and sets the timer again while there is Inline work. An Inline call
// that finds armed set either happened before armed is cleared here (so busy counts
// it) or after (so it arms the timer itself).
func (w *inlineWatch) tick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed.Store(false)
	busy := w.busy.Swap(0) > 0
	running := false
	now := monotonic()
	for c := range w.conns {
		v := c.role.Load()
		if v&1 == 0 {
			continue
		}
		busy, running = true, true
		if now >= c.inlineEnd.Load() && c.role.CompareAndSwap(v, v+1) { // (gen, inline) -> (gen+1, reading)
			go c.readOn()
		}
	}
	if busy {
		if running {
			w.period = inlineTick
		} else {
			w.period = min(2*w.period, inlineTickMax)
		}
		w.armed.Store(true)
		w.timer.Reset(w.period)
	}
}

var epoch = time.Now()

// monotonic is nanoseconds on the monotonic clock.
func monotonic() int64 { return int64(time.Since(epoch)) }

package ipc

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// The reading role: one goroutine at a time reads frames and dispatches them, and
// owns the receive side's state (rd, rdl, completed, watched) while it does. The role
// moves only by a compare-and-swap: on role, when the watch takes it from an Inline
// function past its time (the new holder is a new goroutine, the old one stops reading
// when its Handler returns), or on lend, when a lone call takes it from the reader
// goroutine with Options.CallerReads (and leaves it, or hands it back, when its
// response is read). The winner of the swap is the holder; no lock guards the role.

// errHandedOff ends a reader goroutine whose role another goroutine has taken (Inline).
var errHandedOff = errors.New("ipc: reading handed off to another goroutine")

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
	// Pays: the process's CPU a sequential invoke, which the Leader answers inline,
	// 23.0 → 27.6 µs without it (1.20×, IQR 1.13–1.28, 40 interleaved pairs; 1.19×,
	// IQR 1.02–1.33, 60 pairs); its wall time was within the noise of 2 loaded cores
	// (1.04× and 1.02×).
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
// function running, the period is back to inlineTick. Pays: see reclaimMax.
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

	mu     sync.Mutex         // a leaf: held while taking no other lock (a tick swaps atomics under it)
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

// The reading role on a Conn with Options.CallerReads.
//
// A response read by the reader goroutine has to be handed to the goroutine waiting
// for it. The switch is cheap in itself, but readying a goroutine makes the Go runtime
// wake another thread to run it when one is idle, and on a small machine that wake-up
// costs as much as the whole round trip to the peer. So a call that is alone in flight
// reads its own response: it waits in the network poller itself and the response
// wakes it, as a plain blocking read would.
//
// The role is held by one of three: the reader goroutine (lendReader), a caller
// (lendCaller), or nobody (lendFree). The reader goroutine leaves it free when it has
// just completed a call and nothing else is pending or buffered, and waits: the next
// call takes it with a compare-and-swap, and a caller done with it leaves it free
// again. reclaim gives a role left free for its period back to the reader goroutine,
// so frames that arrive after the last call (pushes, pings, the peer's end) wait at
// most that long, plus the runtime's timer latency. The period is reclaimAfter, and
// stretches up to reclaimMax (reclaimQuietMax while the peer has sent nothing
// unasked) while a run of calls keeps the reclaim needless. A caller that leaves the role while other calls are pending, or the
// connection has failed, hands it straight back. Whoever makes the role the reader
// goroutine's again while it waits sends the one token on lendBack.
//
// Pays: the process's CPU a sequential invoke 25.6 → 28.7 µs without it (1.12×, IQR
// 1.03–1.27, 40 interleaved pairs; 1.20×, IQR 1.02–1.37, 60 pairs); its wall time was
// within the noise of 2 loaded cores (0.74× and 1.27×).
//
// A reading caller bounds its wait by a read deadline on the socket: its call's
// deadline, or an immediate one set when its ctx ends (poke). A deadline interrupts a
// frameReader without losing its state, so the next holder goes on where it stopped.
// A deadline meant for someone else (an earlier caller's, or a poke that lands late)
// is re-armed or cleared by whoever it interrupts.
const (
	lendReader int32 = iota
	lendFree
	lendCaller
)

// reclaimAfter is how long the role may stay free after a call (Conn.reclaimAfter,
// which tests change) while the peer sends frames unasked (pushes, requests).
const reclaimAfter = 200 * time.Microsecond

// reclaimMax is how long the role may stay free after the last of a run of calls,
// on a Conn whose peer has sent frames unasked (pushes, requests). The reclaim's
// period doubles, up to it, each time it fires and finds that calls used the role
// since it was set: a timer that fires makes the runtime wake a thread, and on a small
// machine a wake-up every few hundred microseconds costs a stream of calls a quarter
// of its speed. The first frame the peer sends unasked after such a run waits at most
// this long; any such frame brings the period back to reclaimAfter. Pays, with the
// Inline watch's stretching (inlineTickMax), measured together: sequential invoke p50,
// Follower and Leader in processes of their own, 1.10× the floor's without the two
// (median of 5 interleaved pairs of the side-by-side bench on 2 loaded cores; Unix
// 1.02–1.46, TCP 0.95–1.20; raw p50 1.23×). In one process, where the other side
// keeps threads awake, neither showed (1.00× over 30 pairs).
const reclaimMax = 5 * time.Millisecond

// reclaimQuietMax is reclaimMax for a Conn whose peer has never sent a frame unasked:
// a client that only calls, whose role nobody else needs between its calls. There the
// reclaim finds nothing to read but the peer's end, and callers that want that sooner
// say so (ReadNow). Pays: 16 processes each calling one at a time through a peer that
// answers from Redis, on 2 cores, made 1.25× the calls a second with it (median of 4
// interleaved pairs, 1.17–2.28×) for 0.8× the CPU a call; at 5 ms each process's
// reclaim fired about once every four calls. With 4 such processes: no difference
// (5 pairs, 0.89–1.26×).
const reclaimQuietMax = 50 * time.Millisecond

// pushed brings the reclaim's period back to reclaimAfter: the peer sends unasked.
func (c *Conn) pushed() {
	if !c.unasked.Load() {
		c.unasked.Store(true)
	}
	if c.reclaimWait.Load() != int64(c.reclaimAfter) {
		c.reclaimWait.Store(int64(c.reclaimAfter))
	}
}

// busyReclaim doubles the reclaim's period, up to reclaimMax, or reclaimQuietMax if
// the peer has never sent unasked (or reclaimAfter, if a test made that longer), and
// returns it. Only the reclaim's function calls it.
func (c *Conn) busyReclaim() int64 {
	limit := int64(reclaimQuietMax)
	if c.unasked.Load() {
		limit = int64(reclaimMax)
	}
	for {
		old := c.reclaimWait.Load()
		w := min(2*old, max(limit, int64(c.reclaimAfter)))
		if c.reclaimWait.CompareAndSwap(old, w) { // not over a push's reset
			return w
		}
	}
}

// freeRole leaves the role free and sees that reclaim will fire after it. The timer
// is not reset by every call: resetting a timer to fire earlier than the network
// poller's wait makes the runtime interrupt that wait (a write and a read of an
// eventfd, and a thread woken), which would cost more than the switch this saves.
// So one timer runs at a time, and when it fires while calls are using the role it
// sets itself again, for a longer period (reclaimRole).
func (c *Conn) freeRole() {
	c.freedAt.Store(monotonic())
	c.lend.Store(lendFree)
	if !c.reclaimArmed.Swap(true) {
		c.reclaim.Reset(time.Duration(c.reclaimWait.Load()))
	}
}

// aLongTimeAgo is a read deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// readLending is the reader goroutine's loop on a Conn with CallerReads. It returns
// the error that ended reading.
func (c *Conn) readLending() error {
	for {
		c.completed = false
		err := c.rd.step()
		switch {
		case err == nil:
			if c.completed && c.quiet() {
				c.park()
			}
		case isDeadline(err):
			c.setReadDeadline(time.Time{}) // a poke meant for a caller that has moved on
		default:
			c.rd.discard()
			return err
		}
	}
}

// quiet reports whether no call is pending and no further frame is buffered: nobody
// needs reading until the next call or the reclaim.
func (c *Conn) quiet() bool {
	c.pmu.Lock()
	n := len(c.pending)
	c.pmu.Unlock()
	return n == 0 && !c.readerMore.Load()
}

// freeUnlessWanted leaves the role free, unless a call registered meanwhile and found
// it still held (so it waits for the reader goroutine): then the role goes to the
// reader goroutine at once, and freeUnlessWanted reports true.
func (c *Conn) freeUnlessWanted() (reader bool) {
	c.freeRole()
	// readNow is looked at again once the role is free: a ReadNow that found it still
	// held set the flag before its compare-and-swap, so one of the two sees the other.
	if (!c.quiet() || c.readNow.Load()) && c.lend.CompareAndSwap(lendFree, lendReader) {
		c.readNow.Store(false)
		return true
	}
	return false
}

// park leaves the role free and waits until it is the reader goroutine's again.
func (c *Conn) park() {
	if c.readNow.Swap(false) || c.freeUnlessWanted() {
		return
	}
	select {
	case <-c.lendBack:
	case <-c.done:
		if !c.lend.CompareAndSwap(lendFree, lendReader) {
			// A caller holds it (or the reclaim just took it). The caller's read
			// fails on the closed socket and it hands the role back; if it leaves
			// the role free instead (it looked before the end), the reclaim does.
			<-c.lendBack
		}
	}
	if !c.rdl.IsZero() {
		c.setReadDeadline(time.Time{})
	}
}

// reclaimRole is reclaim's function: a role still free goes back to the reader
// goroutine.
func (c *Conn) reclaimRole() {
	c.reclaimArmed.Store(false)
	if c.lend.Load() != lendFree {
		c.busyReclaim()
		return // held: whoever frees it next sets the timer
	}
	if c.freedAt.Load()+c.reclaimWait.Load() > monotonic() {
		// Freed again since the timer was set: calls are using the role. Wait
		// longer, from when it was last freed.
		rest := c.freedAt.Load() + c.busyReclaim() - monotonic()
		if !c.reclaimArmed.Swap(true) {
			c.reclaim.Reset(time.Duration(max(rest, 0)))
		}
		return
	}
	c.reclaimWait.Store(int64(c.reclaimAfter))
	if c.lend.CompareAndSwap(lendFree, lendReader) {
		c.lendBack <- struct{}{}
	}
}

// readOwn reads frames on the caller's goroutine, which has taken the free role, until
// the call cl is answered (ok), or until ctx ends, deadline passes or the Conn fails:
// then the caller goes on waiting as a call that does not read does, and the result
// comes from there. The role is left or handed back either way.
func (c *Conn) readOwn(ctx context.Context, deadline time.Time, cl *call) (r result, ok bool) {
	defer c.leave()
	if !deadline.IsZero() && (c.rdl.IsZero() || deadline.Before(c.rdl)) {
		c.setReadDeadline(deadline)
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, c.poke)
		defer stop()
	}
	for {
		select {
		case r = <-cl.ch: // completed by the frame just dispatched
			return r, true
		default:
		}
		err := c.rd.step()
		switch {
		case err == nil:
		case !isDeadline(err):
			// Sticky: the reader goroutine fails the Conn. Or errBudgetWait: the
			// reader goroutine waits for the Budget.
			return result{}, false
		case ctx.Err() != nil, !deadline.IsZero() && !time.Now().Before(deadline):
			return result{}, false
		default:
			c.setReadDeadline(deadline) // an earlier caller's deadline, or a late poke
		}
	}
}

// leave ends a caller's hold on the role: it stays free if nobody needs reading, and
// goes back to the reader goroutine otherwise.
func (c *Conn) leave() {
	if c.Err() == nil && c.quiet() && !c.readNow.Swap(false) {
		if leaveHook != nil {
			leaveHook(c)
		}
		if !c.freeUnlessWanted() {
			return
		}
	} else {
		c.lend.Store(lendReader)
	}
	c.lendBack <- struct{}{}
}

// ReadNow makes the reader goroutine read at once what the peer has sent unasked, its
// end included, on a Conn with Options.CallerReads whose reading role no caller holds:
// between calls the role may otherwise stay free for up to reclaimQuietMax (50 ms)
// before the reader goroutine takes it back. A caller that knows the peer is going
// (its process exited, or it announced a handover by other means) calls it so that the
// peer's last frames and its end are read now. When a caller or the
// reader goroutine holds the role, the one holding it reads on instead of leaving the
// role free when it is done.
func (c *Conn) ReadNow() {
	c.readNow.Store(true) // for a holder that would leave the role free (leave, park)
	if c.lend.CompareAndSwap(lendFree, lendReader) {
		c.readNow.Store(false)
		c.reclaimWait.Store(int64(c.reclaimAfter)) // as a reclaim would
		c.lendBack <- struct{}{}
	}
}

// RestBriefly keeps the rest of a Conn with Options.CallerReads (the time its reading
// role may stay free between calls) within reclaimMax (5 ms), as if the peer had sent
// frames unasked, instead of reclaimQuietMax (50 ms): for a caller that cannot learn by
// other means that the peer is going (see ReadNow), so that the peer's last frames and
// its end are read within about 5 ms when no call is made.
func (c *Conn) RestBriefly() { c.unasked.Store(true) }

// leaveHook, when set (by tests), runs in leave between its look at readNow and
// leaving the role free: the seam that lets a test call ReadNow at that moment.
var leaveHook func(*Conn)

// poke interrupts the read of a caller whose ctx has ended.
func (c *Conn) poke() { _ = c.nc.SetReadDeadline(aLongTimeAgo) }

func (c *Conn) setReadDeadline(t time.Time) {
	c.rdl = t
	_ = c.nc.SetReadDeadline(t)
}

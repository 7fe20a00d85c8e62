package ipc

import (
	"fmt"
	"sync"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// Options.FrameTimeout: a frame whose header has been read must be complete within it.
//
// A frame whose bytes are all buffered when its header is read (beginFrame) is read
// without a wait: it takes no timestamp and no lock. Any other frame starts its clock:
// it registers with the process's one sweeper, and unregisters when it is complete or
// its reading ends. The sweeper's timer is set for the earliest deadline registered,
// and is not set again once no frame is registered, so a process without slow frames
// has no timer running. A frame still registered at its deadline makes its Conn fail
// with ErrFrameTimeout (see Fail). The clock goes with the frame when the reading role
// moves, and runs while the reader waits for Budget.
var sweep sweeper

type sweeper struct {
	mu     sync.Mutex          // a leaf: held while taking no other lock
	frames map[*Conn]slowFrame // the Conns whose frame's clock runs
	timer  *time.Timer
	at     int64 // when the timer fires (monotonic nanoseconds); 0 when it is not set
}

// slowFrame is what the sweeper knows of a frame whose clock runs.
type slowFrame struct {
	deadline int64 // monotonic nanoseconds
	kind     frame.Kind
	size     int
	timeout  time.Duration
}

// startClock registers the frame being read with the sweeper.
func (r *frameReader) startClock() {
	p := &r.part
	f := slowFrame{kind: p.f.Kind, size: p.size, timeout: r.c.opts.FrameTimeout}
	f.deadline = monotonic() + int64(f.timeout)
	p.timed = true
	sweep.mu.Lock()
	defer sweep.mu.Unlock()
	if sweep.frames == nil {
		sweep.frames = make(map[*Conn]slowFrame)
	}
	sweep.frames[r.c] = f
	if sweep.at == 0 || f.deadline < sweep.at {
		sweep.set(f.deadline)
	}
}

// stopClock unregisters the frame being read.
func (r *frameReader) stopClock() {
	r.part.timed = false
	sweep.mu.Lock()
	delete(sweep.frames, r.c)
	sweep.mu.Unlock()
}

// set sets the timer for at.
func (s *sweeper) set(at int64) {
	s.at = at
	d := time.Duration(at - monotonic())
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.tick)
	} else {
		s.timer.Reset(d)
	}
}

// tick fails the Conn of every frame past its deadline, and sets the timer for the
// earliest deadline left.
func (s *sweeper) tick() {
	type late struct {
		c *Conn
		f slowFrame
	}
	var expired []late
	s.mu.Lock()
	now, next := monotonic(), int64(0)
	for c, f := range s.frames {
		switch {
		case f.deadline <= now:
			expired = append(expired, late{c, f})
			delete(s.frames, c)
		case next == 0 || f.deadline < next:
			next = f.deadline
		}
	}
	s.at = 0
	if next != 0 {
		s.set(next)
	}
	s.mu.Unlock()
	for _, l := range expired {
		cause := fmt.Errorf("%w: a %s frame of %d bytes (meta and body) was not complete %v after its header", ErrFrameTimeout, l.f.kind, l.f.size, l.f.timeout)
		l.c.Fail(frame.CodeLimit, cause)
	}
}

package ipc

import (
	"fmt"
	"sync"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// The buffer a frame is read into.
//
// A frame's meta and body are read into one buffer, which the Handler then owns. A
// frame of up to freeFrame bytes gets it when its header is read. A larger one is
// staged: its first bytes go into staging buffers, each at most growth times the bytes
// read so far (freeFrame for the first), until the peer is known to have sent at least
// 1/growth of the frame (the bytes read, plus those waiting in the socket where the
// system tells: see frameSource.arrived); then the frame gets its own buffer, exactly
// its size, and the bytes staged are copied into it. So an incomplete frame holds at
// most growth times what the peer has sent (freeFrame at least), however large its
// header says it is, besides the spare below, which the process holds anyway.
//
// Staging buffers never leave the reader, so they are reused: the process keeps one
// spare (the largest staging buffer given back, dropped after spareIdle unused), which
// a frame takes when it is free and large enough, and then grows into without copying.
// A staging buffer made for each frame costs far more than the bytes it copies: its
// pages are fresh (the runtime gives freed memory back to the system), and on a small
// VM a fresh page costs tens of microseconds. Measured there (2 cores; median ratio to
// reading without staging over 16 paired runs of ipc's BenchmarkLargeFrame, 16 MiB):
// fresh staging buffers +10% over a Unix socket and +14% over TCP, the spare -2% and
// -18%. (With growth 4, which stages 1 MiB frames too, fresh staging buffers made the
// root package's 1 MiB inline round trips 58% slower, the spare 6%.)

// freeFrame is the most a frame's buffer holds before its bytes have arrived: a frame
// up to this size is allocated at once.
const freeFrame = 64 << 10

// growth bounds a staged frame's buffer by what the peer has sent of it: the next
// staging buffer, or the frame's own, is at most growth times larger. Why 8 and not
// less: before this side reads, a local peer can have sent no more than its socket's
// send buffer holds (about 210 KiB by default on Linux), so with 8 a frame up to about
// 1.7 MiB from a fast peer gets its own buffer at once, with no staging. With 4, 1 MiB
// inline round trips (the root package's BenchmarkLargePayload/inline/1MiB) were 8%
// slower than without staging (median of 10 paired runs); with 8, 1% faster.
const growth = 8

// stageSize is the size of the staging buffer that follows one holding n bytes (n = 0:
// the first) of a frame of size bytes: the largest size/growth^j, rounded up, that is
// at most max(growth·n, freeFrame). Taking the sizes down from size, rather than up from
// freeFrame, makes the last staging buffer a 1/growth of the frame whatever its size:
// a frame just over a power of growth is not staged in a buffer almost its size.
func stageSize(size, n int) int {
	limit := max(growth*n, freeFrame)
	for size > limit {
		size = (size + growth - 1) / growth
	}
	return size
}

// spare is the process's spare staging buffer: nil while a frame stages in it, or
// once it has gone unused for spareIdle.
var spare struct {
	mu    sync.Mutex // a leaf: held while taking no other lock
	buf   []byte
	used  bool        // taken since the timer last looked
	timer *time.Timer // drops buf after spareIdle without use; nil until the first put
}

// spareIdle is how long the spare is kept without being used.
const spareIdle = time.Second

// getStage returns a staging buffer of length n: the spare if it is free and large
// enough, else a new one.
func getStage(n int) []byte {
	spare.mu.Lock()
	if b := spare.buf; cap(b) >= n {
		spare.buf, spare.used = nil, true
		spare.mu.Unlock()
		return b[:n]
	}
	spare.mu.Unlock()
	return make([]byte, n)
}

// putStage gives back a staging buffer nobody references any more: it becomes the
// spare unless the spare is larger.
func putStage(b []byte) {
	spare.mu.Lock()
	defer spare.mu.Unlock()
	if cap(b) <= cap(spare.buf) {
		return
	}
	spare.buf = b[:cap(b)]
	if spare.timer == nil {
		spare.timer = time.AfterFunc(spareIdle, dropIdleSpare)
	}
}

// dropIdleSpare is the spare's timer: it drops a spare nobody took for spareIdle, and
// looks again later otherwise.
func dropIdleSpare() {
	spare.mu.Lock()
	defer spare.mu.Unlock()
	if !spare.used && spare.buf != nil {
		spare.buf, spare.timer = nil, nil
		return
	}
	spare.used = false
	spare.timer.Reset(spareIdle)
}

// beginFrame prepares to read the meta and body of the frame whose header r.part
// holds: a small frame gets its buffer; a large one is refused if it could never fit
// in the Budget; a frame whose bytes are not all buffered yet starts its clock (see
// sweep.go).
func (r *frameReader) beginFrame() error {
	p := &r.part
	if p.size <= freeFrame {
		if p.size > 0 {
			p.buf = make([]byte, p.size)
		}
	} else if b := r.c.opts.Budget; b != nil && int64(p.size-freeFrame) > b.limit {
		return fmt.Errorf("%w: a %s frame of %d bytes (meta and body) needs %d bytes of the receiver's budget for incomplete frames, which holds %d in all",
			frame.ErrTooLarge, p.f.Kind, p.size, p.size-freeFrame, b.limit)
	}
	if r.c.opts.FrameTimeout > 0 && r.src.buffered() < p.size {
		r.startClock()
	}
	return nil
}

// grow makes room for more of a staged frame's bytes, which fill p.buf (p.got ==
// len(p.buf) < p.size; nil at first): the frame's own buffer if the peer is known to
// have sent at least 1/growth of it, else a larger staging buffer. It reserves the
// Budget's bytes for the new buffer first, and may wait for them (see reserve).
func (r *frameReader) grow() error {
	p := &r.part
	n := p.size
	if n > growth*(p.got+r.src.arrived()) {
		n = stageSize(p.size, p.got)
	}
	if err := r.reserve(n); err != nil {
		return err
	}
	if n < p.size && n <= cap(p.buf) {
		p.buf = p.buf[:n] // staging in the spare, which has room
		return nil
	}
	var b []byte
	if n < p.size {
		b = getStage(n)
	} else {
		b = make([]byte, n)
	}
	copy(b, p.buf[:p.got])
	putStage(p.buf)
	p.buf = b
	return nil
}

// endFrame lets go of what the frame held while it was incomplete: its bytes of the
// Budget and its clock. A frame whose reading ended early also gives back its staging
// buffer.
func (r *frameReader) endFrame() {
	p := &r.part
	if p.reserved > 0 {
		r.c.opts.Budget.release(p.reserved)
		p.reserved = 0
	}
	if p.timed {
		r.stopClock()
	}
	if len(p.buf) < p.size {
		putStage(p.buf)
		p.buf = nil
	}
}

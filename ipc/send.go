package ipc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// The send path: wmu guards the queue (wbuf, wfds, wclosed, flushed), dbuf and
// writing; the goroutine that set writing under wmu (the writer goroutine, or one
// sender writing directly) owns the socket's send side and dw until it clears writing.

// Send queues one frame for the peer and returns without waiting for the write. Only
// Kind, Flags, ID and Timeout of h are used. Meta and body are copied before Send
// returns (as by every method that sends): the caller may reuse them at once. If the
// queue would exceed MaxQueue the Conn is aborted with ErrSlowConsumer; if the Conn
// has ended Send returns its cause wrapped in ErrConnLost.
func (c *Conn) Send(h frame.Header, meta, body []byte) error {
	return c.send(h, meta, body, nil, nil, false, true)
}

// SendParts is Send with the body in two parts, body then tail, and files passed
// alongside the frame. The peer receives body and tail as one body: neither is copied
// but into the queue, so a large tail behind a small header costs what the same bytes
// as one body do. Files (SCM_RIGHTS) set h.FDs, at most frame.MaxFDs (else
// ErrTooManyFiles); the Conn duplicates their descriptors before SendParts returns, so
// the caller may close its files at once, and closes the duplicates after the write, or
// when the Conn ends without writing them. A frame with files goes out in its own
// sendmsg, with the descriptors attached to its first byte. Files on a Conn that cannot
// pass them (see CanPassFiles) fail with ErrFDUnsupported. It does not wait for the
// write.
func (c *Conn) SendParts(h frame.Header, meta, body, tail []byte, files []*os.File) error {
	fds, err := c.dupFiles(files)
	if err != nil {
		return err
	}
	return c.send(h, meta, body, tail, fds, false, true)
}

// CloseSend queues h as the last frame this side sends: every later Send fails with
// ErrSendClosed, atomically with respect to the queue, so the peer knows that nothing
// follows h. Reading goes on.
func (c *Conn) CloseSend(h frame.Header) error {
	return c.send(h, nil, nil, nil, nil, true, true)
}

// Reply answers request id with a response frame.
func (c *Conn) Reply(id uint64, body []byte) error {
	return c.Send(frame.Header{Kind: frame.KindResponse, ID: id}, nil, body)
}

// ReplyError answers request id with an error frame carrying code and msg.
func (c *Conn) ReplyError(id uint64, code, msg string) error {
	return c.Send(frame.Header{Kind: frame.KindError, ID: id}, []byte(code), []byte(msg))
}

// send queues a frame, or writes it at once (see writeDirect) when alone says no other
// call of this side is waiting and the Conn shows no other sign of load; fds (the
// Conn's own duplicates, possibly nil) are attached to it. Whatever happens, send takes
// ownership of fds: they are queued or closed.
func (c *Conn) send(h frame.Header, meta, body, tail []byte, fds []int, last, alone bool) error {
	h.FDs = uint8(len(fds))
	alone = c.unloaded(h, alone)
	size := frame.HeaderSize + len(meta) + len(body) + len(tail)
	c.wmu.Lock()
	if err := c.sendClosed(); err != nil {
		c.wmu.Unlock()
		closeFDs(fds)
		return err
	}
	if len(c.wbuf) > 0 && len(c.wbuf)+size > c.opts.MaxQueue {
		queued := len(c.wbuf)
		c.wmu.Unlock()
		closeFDs(fds)
		err := fmt.Errorf("%w: %d bytes queued, limit %d", ErrSlowConsumer, queued, c.opts.MaxQueue)
		c.log.Warn("cluster: dropping a peer that does not read", "peer", c.peer, "queued", queued, "limit", c.opts.MaxQueue)
		c.Abort(err)
		return fmt.Errorf("%w: %w", ErrConnLost, err)
	}
	if alone && len(fds) == 0 && c.direct && !c.writing && len(c.wbuf) == 0 {
		// Nothing queued and nobody writing: write it from this goroutine. Pays:
		// sequential invoke 24.6 → 26.9 µs without it (1.16×, IQR 1.00–1.34; the
		// process's CPU a call 1.15×, IQR 1.06–1.20; 40 interleaved pairs on 2 loaded
		// cores). It costs publish fan-out: 42.5 → 38.6 µs a message without it
		// (0.88×, IQR 0.81–0.98).
		c.writing = true
		// Its frame goes in the last direct write's buffer. Pays: sequential invoke
		// 21.6 → 22.8 µs with a new buffer for each (1.07×, IQR 1.00–1.13; the
		// process's CPU a call 1.06×, IQR 1.02–1.13; 30 interleaved pairs on 2 cores,
		// load 4, where same-build pairs gave 1.01, IQR 0.99–1.07).
		buf := frame.AppendFrameParts(growFor(c.dbuf[:0], size), h, meta, body, tail)
		c.dbuf = nil
		c.wclosed = last
		c.wmu.Unlock()
		c.writeDirect(buf)
		return nil
	}
	wasEmpty := len(c.wbuf) == 0
	if len(fds) > 0 {
		c.wfds = append(c.wfds, fdFrame{off: len(c.wbuf), end: len(c.wbuf) + size, fds: fds})
	}
	c.wbuf = frame.AppendFrameParts(growFor(c.wbuf, size), h, meta, body, tail)
	c.wclosed = last
	c.wmu.Unlock()
	if wasEmpty {
		c.wakeWriter()
	}
	return nil
}

// unloaded counts the answer h pays, if it answers a request, and reports whether a
// frame sent alone (no other call of this side waiting) finds the Conn without signs
// of load: no answers owed, no frames the reader holds undispatched.
func (c *Conn) unloaded(h frame.Header, alone bool) bool {
	if (h.Kind == frame.KindResponse || h.Kind == frame.KindError) && h.ID != 0 {
		if c.owed.Add(-1) < 0 {
			c.owed.Add(1) // an answer to a request not counted (or counted as lost)
		}
	}
	return alone && c.owed.Load() <= 0 && !c.readerMore.Load()
}

// sendClosed says, with wmu held, why nothing more may be queued: the Conn has ended,
// or CloseSend was called. Nil: frames may be queued.
func (c *Conn) sendClosed() error {
	select {
	case <-c.done:
		return c.lostErr()
	default:
	}
	if c.wclosed {
		return ErrSendClosed
	}
	return nil
}

// writeDirect writes buf (whole frames, none passing descriptors) from the sender's
// goroutine, which holds c.writing, with one non-blocking write: it never waits for the
// socket. What the socket does not take at once goes first in the queue, and the
// writer goroutine finishes the job, as it writes what other senders queued meanwhile.
func (c *Conn) writeDirect(buf []byte) {
	n, err := c.dw.write(buf)
	c.bytesOut.Add(uint64(max(n, 0)))
	if err != nil {
		c.wmu.Lock()
		c.writing = false
		c.wmu.Unlock()
		c.Abort(fmt.Errorf("write: %w", err))
		return
	}
	if n > 0 && c.heartbeats {
		c.lastSend.Store(time.Now().UnixNano())
	}
	c.wmu.Lock()
	if n < len(buf) {
		// The socket is full (or a deadline or the Conn's end needs the writer's
		// attention): the rest goes ahead of what was queued meanwhile.
		if len(c.wbuf) == 0 {
			// Nothing queued meanwhile: the rest, moved to the front, becomes the
			// queue (buf is this writer's alone, and not kept for the next direct
			// write).
			rest := copy(buf, buf[n:])
			c.wbuf, buf = buf[:rest], nil
		} else {
			rest := len(buf) - n
			q := growFor(nil, rest+len(c.wbuf))
			q = append(append(q, buf[n:]...), c.wbuf...)
			for i := range c.wfds {
				c.wfds[i].off += rest
				c.wfds[i].end += rest
			}
			c.wbuf = q
		}
	}
	c.writing = false
	if cap(buf) <= maxReusedWriteBuffer {
		c.dbuf = buf[:0]
	} else {
		recycle(buf)
	}
	backlog := len(c.wbuf) > 0
	if !backlog {
		c.signalFlushed()
	}
	c.wmu.Unlock()
	if backlog {
		c.wakeWriter()
	}
}

func (c *Conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Conn) writeLoop() {
	defer close(c.writerDone)
	defer func() {
		// The Conn has ended (done is closed, so send queues nothing more): close the
		// descriptors of frames that will never be written.
		c.wmu.Lock()
		for _, m := range c.wfds {
			closeFDs(m.fds)
		}
		c.wfds = nil
		c.wmu.Unlock()
	}()
	var tick <-chan time.Time
	if c.heartbeats {
		t := time.NewTicker(c.opts.Heartbeat)
		defer t.Stop()
		tick = t.C
	}
	var spare writerSpare
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
			// Woken for a backlog: the senders that made it are likely still
			// running. Let them queue more before the write, so that one write
			// carries many frames (the peer then also reads them in one go).
			// Pays: throughput 6.8 → 11.8 µs a call without the yield (2.0×, IQR
			// 1.6–2.8; 40 interleaved pairs on 2 loaded cores).
			c.wmu.Lock()
			small := len(c.wbuf) < coalesceBelow
			c.wmu.Unlock()
			if small {
				runtime.Gosched()
			}
		case now := <-tick:
			if err := c.heartbeat(now); err != nil {
				c.Abort(err)
				return
			}
		}
		if err := c.writeQueued(&spare); err != nil {
			c.Abort(err)
			return
		}
	}
}

// heartbeat is the writer's periodic check: a peer silent for too long ends the Conn
// (the error returned), and a line idle for a heartbeat gets a ping.
func (c *Conn) heartbeat(now time.Time) error {
	if silent := now.Sub(time.Unix(0, c.lastRecv.Load())); silent > c.opts.HeartbeatTimeout {
		return fmt.Errorf("%w: nothing heard from the peer for %v (limit %v)", ErrHeartbeatTimeout, silent.Round(time.Millisecond), c.opts.HeartbeatTimeout)
	}
	if now.Sub(time.Unix(0, c.lastSend.Load())) >= c.opts.Heartbeat {
		_ = c.Send(frame.Header{Kind: frame.KindPing, ID: 0}, nil, nil)
	}
	return nil
}

// writerSpare is the writer goroutine's last written queue, emptied, which becomes the
// next queue, so that a busy Conn's queue does not grow from nothing for every write.
// Pays: throughput 10.3 → 13.8 µs a call with a new queue for every write (1.47×, IQR
// 0.96–2.77; the process's CPU a call 1.34×, IQR 1.19–1.54; 40 interleaved pairs on 2
// loaded cores).
type writerSpare struct {
	buf   []byte
	marks []fdFrame
}

// writeQueued writes what is queued, batch after batch, until the queue is empty (and
// leaves the send side then), unless a sender writing directly holds the send side:
// that sender wakes the writer if it leaves a backlog. An error is a failed write.
func (c *Conn) writeQueued(spare *writerSpare) error {
	held := false // this goroutine holds c.writing
	for {
		c.wmu.Lock()
		if c.writing && !held {
			c.wmu.Unlock()
			return nil
		}
		out, marks := c.wbuf, c.wfds
		if len(out) == 0 {
			c.writing = false
			c.signalFlushed()
			c.wmu.Unlock()
			return nil
		}
		c.wbuf, c.wfds = spare.buf[:0], spare.marks[:0]
		c.writing, held = true, true
		c.wmu.Unlock()
		if err := c.writeOut(out, marks); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("%w: the peer read nothing for %v", ErrHeartbeatTimeout, c.opts.HeartbeatTimeout)
			}
			return fmt.Errorf("write: %w", err)
		}
		if c.heartbeats {
			c.lastSend.Store(time.Now().UnixNano())
		}
		if cap(out) <= maxReusedWriteBuffer {
			spare.buf = out[:0]
		} else {
			spare.buf = nil
			recycle(out)
		}
		clear(marks) // drop the closed fd slices
		spare.marks = marks[:0]
	}
}

// writeOut writes queued frames: runs of frames without descriptors in one write each,
// and every frame that passes descriptors in its own sendmsg with the descriptors
// attached, so that they travel with its first byte (see fdReader for why). It closes
// every descriptor in marks, written or not.
func (c *Conn) writeOut(out []byte, marks []fdFrame) (err error) {
	defer func() {
		for _, m := range marks {
			closeFDs(m.fds)
		}
	}()
	pos := 0
	for _, m := range marks {
		if m.off > pos {
			if err := c.write(out[pos:m.off]); err != nil {
				return err
			}
		}
		c.setWriteDeadline()
		if err := writeWithFDs(c.nc, out[m.off:m.end], m.fds); err != nil {
			return err
		}
		c.bytesOut.Add(uint64(m.end - m.off))
		pos = m.end
	}
	if pos < len(out) {
		return c.write(out[pos:])
	}
	return nil
}

func (c *Conn) write(b []byte) error {
	c.setWriteDeadline()
	n, err := c.nc.Write(b)
	c.bytesOut.Add(uint64(n))
	return err
}

// setWriteDeadline arms the write deadline: a peer that stops reading must not park the
// writer (and with it the heartbeat check) forever, so a write that makes no progress
// for the heartbeat timeout ends the Conn.
func (c *Conn) setWriteDeadline() {
	if c.heartbeats {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.opts.HeartbeatTimeout))
	}
}

// signalFlushed wakes waitFlushed: the queue is empty and the send side is free. wmu
// is held; both writers call it when they leave the send side with nothing queued.
func (c *Conn) signalFlushed() {
	if c.flushed != nil {
		close(c.flushed)
		c.flushed = nil
	}
}

// waitFlushed waits until every queued frame has been written (nil), the Conn ends (its
// cause) or ctx ends (ctx.Err()).
func (c *Conn) waitFlushed(ctx context.Context) error {
	for {
		c.wmu.Lock()
		empty := len(c.wbuf) == 0 && !c.writing
		if !empty && c.flushed == nil {
			c.flushed = make(chan struct{})
		}
		ch := c.flushed
		c.wmu.Unlock()
		if empty {
			return nil
		}
		select {
		case <-ch:
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// bigBufs recycles write buffers too large to keep per connection (over
// maxReusedWriteBuffer), shared by every Conn: without it each large frame got a fresh
// buffer, whose pages fault in as the frame is copied into it (a 1 MiB frame: 256
// faults, more than the copy). Being a sync.Pool, it is emptied by the garbage
// collector: a process that sent a large frame once does not keep its buffer.
// Pays: a 1 MiB invoke (inline Data) 3.2 → 5.6 ms without it (1.8×, IQR 1.5–2.3; 40
// interleaved pairs on 2 loaded cores).
var bigBufs sync.Pool // of *[]byte

// growFor returns b if it can take n more bytes, or if the result stays small enough
// to leave to append; else a pooled buffer large enough, holding b's bytes, when the
// pool has one.
func growFor(b []byte, n int) []byte {
	need := len(b) + n
	if need <= cap(b) || need <= maxReusedWriteBuffer {
		return b
	}
	if p, _ := bigBufs.Get().(*[]byte); p != nil && cap(*p) >= need {
		return append((*p)[:0], b...)
	}
	return b
}

// recycle gives a large write buffer, written and referenced nowhere else, to bigBufs.
func recycle(b []byte) {
	if cap(b) > maxReusedWriteBuffer {
		b = b[:0]
		bigBufs.Put(&b)
	}
}

package ipc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxQueue         = 64 << 20
	DefaultHeartbeat        = time.Second
	DefaultHeartbeatTimeout = 10 * time.Second
	readBufferSize          = 64 << 10
	maxReusedWriteBuffer    = 1 << 20
)

// Options configures a Conn. The zero value is usable: every zero field means its default.
type Options struct {
	// Limits bounds what the Conn accepts from the peer; violations close the Conn with
	// an error matching frame.ErrProtocol or frame.ErrTooLarge.
	Limits frame.Limits
	// MaxQueue bounds the bytes queued for the peer but not yet written. A peer that does
	// not read fast enough to stay under it is dropped with ErrSlowConsumer rather than
	// allowed to grow this process's memory. Default DefaultMaxQueue.
	MaxQueue int
	// Heartbeat is how long the Conn may send nothing before it sends a ping.
	// Default DefaultHeartbeat; negative disables pings and the silence check.
	Heartbeat time.Duration
	// HeartbeatTimeout is how long the peer may stay silent (no frame of any kind, pongs
	// included) before the Conn is closed with ErrHeartbeatTimeout. Default
	// DefaultHeartbeatTimeout.
	HeartbeatTimeout time.Duration
	// Handler receives every frame that is not a response, an error answer, a ping or a
	// pong. It runs on the Conn's reader goroutine: it must not block, and must not call
	// Close (use Abort).
	Handler func(c *Conn, f frame.Frame)
	// Logger receives the reason a Conn closed abnormally. Default: discard.
	Logger *slog.Logger
}

// Conn is a framed, multiplexed, full-duplex connection. Requests carry ids; Call
// matches each response to its caller. One reader goroutine and one writer goroutine
// own the socket; the writer coalesces queued frames into one write. All methods are
// safe for concurrent use.
type Conn struct {
	nc   net.Conn
	opts Options
	peer PeerCred
	log  *slog.Logger

	nextID atomic.Uint64

	pmu     sync.Mutex
	pending map[uint64]*call

	wmu     sync.Mutex
	wclosed bool          // CloseSend was called: no more frames may be queued
	wbuf    []byte        // queued frames not yet handed to the socket
	writing bool          // the writer holds bytes it took from wbuf
	wake    chan struct{} // capacity 1: "wbuf became non-empty"
	flushed chan struct{} // closed and replaced whenever everything queued was written

	lastRecv atomic.Int64 // unix nanos of the last frame read
	lastSend atomic.Int64 // unix nanos of the last write

	closeOnce  sync.Once
	ctx        context.Context
	cancel     context.CancelFunc
	done       chan struct{}
	err        error // first cause; written once before done is closed
	readerDone chan struct{}
	writerDone chan struct{}
}

type call struct {
	ch chan result
}

type result struct {
	f   frame.Frame
	err error
}

var callPool = sync.Pool{New: func() any { return &call{ch: make(chan result, 1)} }}

// NewConn wraps nc, whose handshake is already done. peer is what the listener learned
// about the other side (zero on the dialing side). Nothing is read or written until
// Start, so the caller can finish wiring its own state (which its Handler may use)
// first.
func NewConn(nc net.Conn, peer PeerCred, opts Options) *Conn {
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = DefaultMaxQueue
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Conn{
		nc:         nc,
		opts:       opts,
		peer:       peer,
		log:        opts.Logger,
		pending:    make(map[uint64]*call),
		wake:       make(chan struct{}, 1),
		flushed:    make(chan struct{}),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	now := time.Now().UnixNano()
	c.lastRecv.Store(now)
	c.lastSend.Store(now)
	return c
}

// Start starts the reader and writer goroutines. Call it exactly once.
func (c *Conn) Start() {
	go c.readLoop()
	go c.writeLoop()
}

// Peer returns the credentials the listener saw when it accepted this connection.
func (c *Conn) Peer() PeerCred { return c.peer }

// Done is closed when the Conn has failed or been closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns the first cause of the Conn's end, or nil while it is open.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Abort closes the Conn with cause without waiting for its goroutines. It is safe to
// call from a Handler. Pending calls fail with an error wrapping cause.
func (c *Conn) Abort(cause error) {
	c.closeOnce.Do(func() {
		c.err = cause
		close(c.done)
		c.cancel()
		_ = c.nc.Close() // wakes the reader and a blocked writer
	})
}

// Close closes the Conn with ErrClosed and waits for its goroutines. Idempotent; it
// returns nil. It must not be called from a Handler (use Abort there).
func (c *Conn) Close() error {
	c.Abort(ErrClosed)
	<-c.readerDone
	<-c.writerDone
	return nil
}

// Wait blocks until both goroutines have exited after the Conn ended.
func (c *Conn) Wait() {
	<-c.readerDone
	<-c.writerDone
}

// Drain waits until every queued frame has been written (or the Conn ended, or ctx),
// then closes the Conn with ErrClosed. It is how a graceful shutdown lets the last
// responses reach the peer.
func (c *Conn) Drain(ctx context.Context) error {
	defer c.Close()
	for {
		c.wmu.Lock()
		empty := len(c.wbuf) == 0 && !c.writing
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

// Send queues one frame for the peer and returns without waiting for the write. Only
// Kind, Flags, ID and Timeout of h are used. If the queue would exceed MaxQueue the
// Conn is aborted with ErrSlowConsumer; if the Conn has ended Send returns its cause
// wrapped in ErrConnLost.
func (c *Conn) Send(h frame.Header, meta, body []byte) error {
	return c.send(h, meta, body, false)
}

func (c *Conn) send(h frame.Header, meta, body []byte, last bool) error {
	h.FDs = 0
	size := frame.HeaderSize + len(meta) + len(body)
	c.wmu.Lock()
	select {
	case <-c.done:
		c.wmu.Unlock()
		return c.lostErr()
	default:
	}
	if c.wclosed {
		c.wmu.Unlock()
		return ErrSendClosed
	}
	if len(c.wbuf) > 0 && len(c.wbuf)+size > c.opts.MaxQueue {
		queued := len(c.wbuf)
		c.wmu.Unlock()
		err := fmt.Errorf("%w: %d bytes queued, limit %d", ErrSlowConsumer, queued, c.opts.MaxQueue)
		c.log.Warn("cluster: dropping a peer that does not read", "peer", c.peer, "queued", queued, "limit", c.opts.MaxQueue)
		c.Abort(err)
		return fmt.Errorf("%w: %w", ErrConnLost, err)
	}
	wasEmpty := len(c.wbuf) == 0
	c.wbuf = frame.AppendFrame(c.wbuf, h, meta, body)
	c.wclosed = last
	c.wmu.Unlock()
	if wasEmpty {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// CloseSend queues h as the last frame this side sends: every later Send fails with
// ErrSendClosed, atomically with respect to the queue, so the peer knows that nothing
// follows h. Reading goes on.
func (c *Conn) CloseSend(h frame.Header) error {
	return c.send(h, nil, nil, true)
}

// Reply answers request id with a response frame.
func (c *Conn) Reply(id uint64, body []byte) error {
	return c.Send(frame.Header{Kind: frame.KindResponse, ID: id}, nil, body)
}

// ReplyError answers request id with an error frame carrying code and msg.
func (c *Conn) ReplyError(id uint64, code, msg string) error {
	return c.Send(frame.Header{Kind: frame.KindError, ID: id}, []byte(code), []byte(msg))
}

// Call sends a request of kind with a fresh id and waits for its response. timeout is
// carried in the header for the peer (milliseconds, 0 for none); the wait itself is
// bounded by ctx. An error frame from the peer is returned as a *FrameError. If the Conn
// ends first the error wraps ErrConnLost and the Conn's cause; if ctx ends first,
// ctx.Err() is returned and a late response is discarded. A failure before the request
// was queued also matches ErrNotSent.
func (c *Conn) Call(ctx context.Context, kind frame.Kind, timeout uint32, meta, body []byte) (frame.Frame, error) {
	id := c.nextID.Add(1)
	cl := callPool.Get().(*call)
	c.pmu.Lock()
	select {
	case <-c.done:
		c.pmu.Unlock()
		callPool.Put(cl)
		return frame.Frame{}, fmt.Errorf("%w: %w", ErrNotSent, c.lostErr())
	default:
	}
	c.pending[id] = cl
	c.pmu.Unlock()

	if err := c.Send(frame.Header{Kind: kind, ID: id, Timeout: timeout}, meta, body); err != nil {
		c.forget(id, cl)
		return frame.Frame{}, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	select {
	case r := <-cl.ch:
		callPool.Put(cl)
		return r.f, r.err
	case <-ctx.Done():
		c.forget(id, cl)
		return frame.Frame{}, ctx.Err()
	}
}

// forget removes a call that its caller abandoned. If a result raced in, it is drained
// so the pooled call is clean for its next user.
func (c *Conn) forget(id uint64, cl *call) {
	c.pmu.Lock()
	_, ok := c.pending[id]
	delete(c.pending, id)
	c.pmu.Unlock()
	if !ok {
		<-cl.ch // the completer removed it and has sent (or is about to send) exactly once
	}
	callPool.Put(cl)
}

func (c *Conn) complete(id uint64, r result) {
	c.pmu.Lock()
	cl, ok := c.pending[id]
	delete(c.pending, id)
	c.pmu.Unlock()
	if ok {
		cl.ch <- r
	}
}

func (c *Conn) lostErr() error {
	return fmt.Errorf("%w: %w", ErrConnLost, c.err)
}

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	err := c.read()
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: peer closed the connection", io.EOF)
	}
	c.Abort(err)
	if c.err != ErrClosed && !errors.Is(c.err, io.EOF) {
		c.log.Warn("cluster: connection closed", "peer", c.peer, "reason", c.err)
	}
	// Fail every pending call exactly once with the Conn's cause.
	c.pmu.Lock()
	pending := c.pending
	c.pending = make(map[uint64]*call)
	c.pmu.Unlock()
	lost := c.lostErr()
	for _, cl := range pending {
		cl.ch <- result{err: lost}
	}
}

func (c *Conn) read() error {
	br := bufio.NewReaderSize(c.nc, readBufferSize)
	for {
		hb, err := br.Peek(frame.HeaderSize)
		if err != nil {
			if len(hb) > 0 && errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: connection ended inside a frame header (%d of %d bytes)", frame.ErrProtocol, len(hb), frame.HeaderSize)
			}
			return err
		}
		h, err := frame.ParseHeader(hb, c.opts.Limits)
		if err != nil {
			return err
		}
		if h.FDs != 0 {
			return fmt.Errorf("%w: frame declares %d file descriptors, but this connection does not pass descriptors", frame.ErrProtocol, h.FDs)
		}
		_, _ = br.Discard(frame.HeaderSize)
		f := frame.Frame{Header: h}
		if n := int(h.MetaLen) + int(h.BodyLen); n > 0 {
			buf := make([]byte, n)
			if _, err := io.ReadFull(br, buf); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return fmt.Errorf("%w: connection ended inside a %s frame", frame.ErrProtocol, h.Kind)
				}
				return err
			}
			f.Meta, f.Body = buf[:h.MetaLen:h.MetaLen], buf[h.MetaLen:]
		}
		c.lastRecv.Store(time.Now().UnixNano())
		// Answers to abandoned calls are dropped quietly, but an answer to an id this
		// side never issued is a broken or hostile peer.
		if (h.Kind == frame.KindResponse || h.Kind == frame.KindError && h.ID != 0) && h.ID > c.nextID.Load() {
			return fmt.Errorf("%w: %s for request %d, which was never sent", frame.ErrProtocol, h.Kind, h.ID)
		}
		switch h.Kind {
		case frame.KindResponse:
			c.complete(h.ID, result{f: f})
		case frame.KindError:
			fe := &FrameError{Code: string(f.Meta), Message: string(f.Body)}
			if h.ID == 0 {
				return fe // a connection-level error from the peer
			}
			c.complete(h.ID, result{f: f, err: fe})
		case frame.KindPing:
			if err := c.Send(frame.Header{Kind: frame.KindPong, ID: h.ID}, nil, nil); err != nil {
				return err
			}
		case frame.KindPong:
		case frame.KindHello, frame.KindWelcome:
			return fmt.Errorf("%w: unexpected %s frame after the handshake", frame.ErrProtocol, h.Kind)
		default:
			if c.opts.Handler == nil {
				return fmt.Errorf("%w: unexpected %s frame", frame.ErrProtocol, h.Kind)
			}
			c.opts.Handler(c, f)
		}
	}
}

func (c *Conn) writeLoop() {
	defer close(c.writerDone)
	var tick <-chan time.Time
	if c.opts.Heartbeat > 0 {
		t := time.NewTicker(c.opts.Heartbeat)
		defer t.Stop()
		tick = t.C
	}
	var spare []byte
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		case now := <-tick:
			if silent := now.Sub(time.Unix(0, c.lastRecv.Load())); silent > c.opts.HeartbeatTimeout {
				c.Abort(fmt.Errorf("%w: nothing heard from the peer for %v (limit %v)", ErrHeartbeatTimeout, silent.Round(time.Millisecond), c.opts.HeartbeatTimeout))
				return
			}
			if now.Sub(time.Unix(0, c.lastSend.Load())) >= c.opts.Heartbeat {
				_ = c.Send(frame.Header{Kind: frame.KindPing, ID: 0}, nil, nil)
			}
		}
		for {
			c.wmu.Lock()
			out := c.wbuf
			if len(out) == 0 {
				c.writing = false
				close(c.flushed)
				c.flushed = make(chan struct{})
				c.wmu.Unlock()
				break
			}
			c.wbuf = spare[:0]
			c.writing = true
			c.wmu.Unlock()
			// A peer that stops reading must not park the writer (and with it the
			// heartbeat check) forever: a write that makes no progress for the
			// heartbeat timeout ends the Conn.
			if c.opts.Heartbeat > 0 {
				_ = c.nc.SetWriteDeadline(time.Now().Add(c.opts.HeartbeatTimeout))
			}
			if _, err := c.nc.Write(out); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					err = fmt.Errorf("%w: the peer read nothing for %v", ErrHeartbeatTimeout, c.opts.HeartbeatTimeout)
				}
				c.Abort(fmt.Errorf("write: %w", err))
				return
			}
			c.lastSend.Store(time.Now().UnixNano())
			if cap(out) <= maxReusedWriteBuffer {
				spare = out[:0]
			} else {
				spare = nil
			}
		}
	}
}

// Context returns a context that is cancelled when the Conn ends.
func (c *Conn) Context() context.Context { return c.ctx }

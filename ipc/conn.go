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
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxQueue         = 64 << 20
	DefaultHeartbeat        = time.Second
	DefaultHeartbeatTimeout = 10 * time.Second
	readBufferSize          = 64 << 10 // what a busy connection's read buffer grows to
	initialReadBufferSize   = 8 << 10  // what every connection starts with: idle ones stay cheap
	maxReusedWriteBuffer    = 1 << 20
	coalesceBelow           = 4 << 10 // a woken writer yields once before writing less than this
)

// Options configures a Conn. The zero value is usable: every zero field means its default.
type Options struct {
	// Limits bounds what the Conn accepts from the peer; violations fail the Conn (see
	// Fail) with an error matching frame.ErrProtocol or frame.ErrTooLarge.
	Limits frame.Limits
	// Budget, when set, bounds the memory that this Conn's incomplete frames hold
	// together with those of every Conn that shares it: see Budget. Nil: no bound but
	// the one each frame has, at most eight times what the peer has sent of it.
	Budget *Budget
	// FrameTimeout, when positive, is how long a frame may take to arrive whole once
	// its header has been read, waits for Budget included; a frame that takes longer
	// fails the Conn (see Fail) with an error matching ErrFrameTimeout, whatever the
	// heartbeats say. Zero: no bound.
	FrameTimeout time.Duration
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
	// pong, one frame at a time and in order. It runs on the goroutine that holds the
	// reading role: the Conn's reader goroutine, or with CallerReads a caller inside
	// Call. It must not block (except inside Inline, which hands reading on when it
	// does), and must not call Close (use Abort). A frame for the Handler that carries
	// file descriptors is a protocol violation: set FileHandler to accept them.
	Handler func(c *Conn, f frame.Frame)
	// FileHandler, when set, is used instead of Handler for every frame Handler would
	// get, together with the files passed with it (nil for most frames; at most
	// frame.MaxFDs, as many as f.FDs). The handler owns the files and must close them.
	// Descriptors arrive only on Unix sockets on Linux (see CanPassFiles). The same rules
	// as for Handler apply: it runs on the reader goroutine and must not block.
	FileHandler func(c *Conn, f frame.Frame, files []*os.File)
	// Logger receives the reason a Conn closed abnormally. Default: discard.
	Logger *slog.Logger
	// CallerReads lets a call that is the only one in flight read its own response
	// from the socket, instead of waiting for the reader goroutine to hand it over:
	// the response then wakes the goroutine that wants it, as a plain blocking read
	// would, with no goroutine switch. Frames for the Handler that arrive meanwhile are
	// dispatched by that caller. After a call the reading role stays free for the next
	// one for about 200 µs (plus the runtime's timer latency, up to a millisecond in an
	// idle process) before the reader goroutine takes it back; frames that arrive in
	// that window wait for it. After a long run of calls during which the peer sent
	// nothing unasked, the window stretches to up to 5 ms, which spares the run a timer
	// wake-up every 200 µs; the first frame the peer sends unasked shortens it again.
	// Inline must not be used on such a Conn. See lend.go.
	CallerReads bool
}

// Conn is a framed, multiplexed, full-duplex connection. Requests carry ids; Call
// matches each response to its caller. One goroutine at a time, the reader, owns the
// receive side (a Handler may run work on it and hand reading on: see Inline; with
// Options.CallerReads a lone call reads its own response). On the send side, a frame
// sent while nothing is queued or being written is written at once by the sender,
// with one non-blocking write (no goroutine switch); anything else (a backlog, what the
// socket did not take at once, frames passing descriptors, pings) is queued for the
// writer goroutine, which coalesces queued frames into one write, except that a frame
// passing file descriptors goes out in a sendmsg of its own (see the package
// documentation). Either way a sender never blocks on the socket. All methods are safe
// for concurrent use.
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
	wfds    []fdFrame     // the frames in wbuf that carry descriptors, in order
	writing bool          // someone (the writer, or a sender writing directly) holds the socket's send side
	wake    chan struct{} // capacity 1: "wbuf became non-empty"
	flushed chan struct{} // made by Drain; closed and cleared when everything queued was written
	dbuf    []byte        // a reusable buffer for direct writes (see writeDirect)

	// direct is set by Start when nc allows non-blocking writes from any goroutine
	// (see writeDirect). dw is the state of the one direct write in progress, owned by
	// whoever holds writing.
	direct bool
	dw     directWriter

	heartbeats bool // Options.Heartbeat > 0: keep lastRecv and lastSend

	// Signs of load, which make a sender queue its frame for the writer (which
	// coalesces) rather than write it directly: answers owed to the peer (requests
	// handed to the Handler and not yet answered), and the reader holding further
	// frames it has not dispatched yet.
	owed       atomic.Int64
	readerMore atomic.Bool

	// The reading role (see Inline): role is the generation of the goroutine that holds
	// it (bumped by each takeover) times 2, plus 1 while that goroutine runs an Inline
	// function, which should end by inlineEnd (monotonic nanoseconds). rd is the receive
	// side's state and watched says the Conn is in the watch's set; both go with the
	// role.
	role      atomic.Uint64
	inlineEnd atomic.Int64
	rd        *frameReader
	watched   bool

	// With Options.CallerReads, the reading role also goes to callers: lend says who
	// holds it (see lend.go).
	lend         atomic.Int32
	lendBack     chan struct{} // capacity 1: the role is the reader goroutine's again
	reclaim      *time.Timer   // gives a role left free back to the reader goroutine
	reclaimAfter time.Duration // how long the role may stay free (see lend.go)
	freedAt      atomic.Int64  // monotonic nanoseconds when the role was last left free
	reclaimArmed atomic.Bool   // reclaim is set (or its function is running)
	reclaimWait  atomic.Int64  // the reclaim's period now, nanoseconds: reclaimAfter, longer while calls keep the role busy
	rdl          time.Time     // the read deadline set on nc; the role's holder owns it
	completed    bool          // the last frame dispatched completed a call; the role's holder owns it

	lastRecv atomic.Int64 // unix nanos of the last frame read
	lastSend atomic.Int64 // unix nanos of the last write

	bytesIn, bytesOut atomic.Uint64 // read from and written to the socket (see Bytes)

	failed atomic.Pointer[error] // the cause given to Fail (see fail.go)

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
	f     frame.Frame
	files []*os.File // descriptors passed with a response; owned by whoever holds the result
	err   error
}

// fdFrame marks a queued frame that carries descriptors: wbuf[off:end] goes out in its
// own sendmsg with fds attached. The fds are the Conn's own duplicates of the caller's
// files; they are closed once written, or when the Conn ends without writing them.
type fdFrame struct {
	off, end int
	fds      []int
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
		heartbeats: opts.Heartbeat > 0,
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if opts.CallerReads {
		c.lendBack = make(chan struct{}, 1)
		c.reclaimAfter = reclaimAfter
		c.reclaim = time.AfterFunc(time.Hour, c.reclaimRole)
		c.reclaim.Stop()
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	now := time.Now().UnixNano()
	c.lastRecv.Store(now)
	c.lastSend.Store(now)
	return c
}

// Start starts the reader and writer goroutines. Call it exactly once.
func (c *Conn) Start() {
	c.reclaimWait.Store(int64(c.reclaimAfter)) // tests may have changed it
	c.wmu.Lock()
	c.direct = c.dw.init(c.nc)
	c.wmu.Unlock()
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
// call from a Handler. Pending calls fail with an error wrapping cause. On a Conn that
// is failing (see Fail), Fail's cause is the Conn's cause instead.
func (c *Conn) Abort(cause error) {
	c.closeOnce.Do(func() {
		if failed := c.failed.Load(); failed != nil {
			cause = *failed
		}
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
	return c.waitFlushed(ctx)
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

// Send queues one frame for the peer and returns without waiting for the write. Only
// Kind, Flags, ID and Timeout of h are used. Meta and body are copied before Send
// returns (as by every method that sends): the caller may reuse them at once. If the
// queue would exceed MaxQueue the Conn is aborted with ErrSlowConsumer; if the Conn
// has ended Send returns its cause wrapped in ErrConnLost.
func (c *Conn) Send(h frame.Header, meta, body []byte) error {
	return c.send(h, meta, body, nil, nil, false, true)
}

// CanPassFiles reports whether files can be sent and received on this Conn: it runs
// over a Unix socket, on Linux. Elsewhere SendFiles, CallFiles, CallHeader and
// ReplyFiles with files fail with ErrFDUnsupported.
func (c *Conn) CanPassFiles() bool { return canPassFiles(c.nc) }

// SendFiles is Send with files passed alongside the frame (SCM_RIGHTS); h.FDs is set to
// len(files), at most frame.MaxFDs (else ErrTooManyFiles). The Conn duplicates every
// file's descriptor before SendFiles returns, so the caller may close its files at once;
// the duplicates are closed after the write, or when the Conn ends without writing them.
// The frame goes out in its own sendmsg, with the descriptors attached to its first
// byte. With no files it is Send. Files on a Conn that cannot pass them (see
// CanPassFiles) fail with ErrFDUnsupported. It does not wait for the write.
func (c *Conn) SendFiles(h frame.Header, meta, body []byte, files []*os.File) error {
	fds, err := c.dupFiles(files)
	if err != nil {
		return err
	}
	return c.send(h, meta, body, nil, fds, false, true)
}

// SendParts is SendFiles with the body in two parts, body then tail, which the peer
// receives as one body: neither is copied but into the queue, so a large tail behind a
// small header costs what the same bytes as one body do.
func (c *Conn) SendParts(h frame.Header, meta, body, tail []byte, files []*os.File) error {
	fds, err := c.dupFiles(files)
	if err != nil {
		return err
	}
	return c.send(h, meta, body, tail, fds, false, true)
}

// dupFiles duplicates the descriptors of files for the writer, after checking that they
// can be sent. Nil files give nil.
func (c *Conn) dupFiles(files []*os.File) ([]int, error) {
	if len(files) == 0 {
		return nil, nil
	}
	if !c.CanPassFiles() {
		return nil, fmt.Errorf("%w: %s (only Unix sockets on Linux pass them)", ErrFDUnsupported, describeConn(c.nc))
	}
	if len(files) > frame.MaxFDs {
		return nil, fmt.Errorf("%w: %d files, a frame passes at most %d", ErrTooManyFiles, len(files), frame.MaxFDs)
	}
	fds := make([]int, 0, len(files))
	for i, f := range files {
		fd, err := dupFile(f)
		if err != nil {
			closeFDs(fds)
			return nil, fmt.Errorf("duplicating file %d of %d (%v): %w", i+1, len(files), fileName(f), err)
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

func fileName(f *os.File) string {
	if f == nil {
		return "nil"
	}
	return f.Name()
}

func describeConn(nc net.Conn) string {
	return fmt.Sprintf("%s connection to %v", nc.LocalAddr().Network(), nc.RemoteAddr())
}

// send queues a frame, or writes it at once (see writeDirect) when alone says no other
// call of this side is waiting and the Conn shows no other sign of load; fds (the
// Conn's own duplicates, possibly nil) are attached to it. Whatever happens, send takes
// ownership of fds: they are queued or closed.
func (c *Conn) send(h frame.Header, meta, body, tail []byte, fds []int, last, alone bool) error {
	h.FDs = uint8(len(fds))
	if (h.Kind == frame.KindResponse || h.Kind == frame.KindError) && h.ID != 0 {
		if c.owed.Add(-1) < 0 {
			c.owed.Add(1) // an answer to a request not counted (or counted as lost)
		}
	}
	alone = alone && c.owed.Load() <= 0 && !c.readerMore.Load()
	size := frame.HeaderSize + len(meta) + len(body) + len(tail)
	c.wmu.Lock()
	select {
	case <-c.done:
		c.wmu.Unlock()
		closeFDs(fds)
		return c.lostErr()
	default:
	}
	if c.wclosed {
		c.wmu.Unlock()
		closeFDs(fds)
		return ErrSendClosed
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
		// Nothing queued and nobody writing: write it from this goroutine.
		c.writing = true
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

// bigBufs recycles write buffers too large to keep per connection (over
// maxReusedWriteBuffer), shared by every Conn: without it each large frame got a fresh
// buffer, whose pages fault in as the frame is copied into it (a 1 MiB frame: 256
// faults, more than the copy). Being a sync.Pool, it is emptied by the garbage
// collector: a process that sent a large frame once does not keep its buffer.
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

func (c *Conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// maxDirectRounds bounds how many backlogs a direct writer writes on behalf of other
// senders before it hands the rest to the writer goroutine.
const maxDirectRounds = 4

// writeDirect writes buf (whole frames, none passing descriptors) from the sender's
// goroutine, which holds c.writing, with non-blocking writes: it never waits for the
// socket. What other senders queued meanwhile is written the same way (coalesced, a
// few rounds at most); what the socket does not take at once goes first in the queue,
// and the writer goroutine finishes the job.
func (c *Conn) writeDirect(buf []byte) {
	for round := 1; ; round++ {
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
		} else if len(c.wbuf) > 0 && len(c.wfds) == 0 && round < maxDirectRounds {
			next := c.wbuf
			c.wbuf = buf[:0]
			c.wmu.Unlock()
			buf = next
			continue
		}
		c.writing = false
		if cap(buf) <= maxReusedWriteBuffer {
			c.dbuf = buf[:0]
		} else {
			recycle(buf)
		}
		backlog := len(c.wbuf) > 0
		if !backlog && c.flushed != nil {
			close(c.flushed)
			c.flushed = nil
		}
		c.wmu.Unlock()
		if backlog {
			c.wakeWriter()
		}
		return
	}
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

// ReplyFiles answers request id with a response frame that passes files, as SendFiles
// does: the caller may close its files when ReplyFiles returns. (A response with header
// flags is SendFiles with Kind frame.KindResponse and the request's id.)
func (c *Conn) ReplyFiles(id uint64, body []byte, files []*os.File) error {
	return c.SendFiles(frame.Header{Kind: frame.KindResponse, ID: id}, nil, body, files)
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

// newFiles wraps received descriptors; nil for none.
func newFiles(fds []int) []*os.File {
	if len(fds) == 0 {
		return nil
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), fmt.Sprintf("fd %d from peer", fd))
	}
	return files
}

// closeFiles closes files the Conn received and could not deliver.
func closeFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

func (c *Conn) lostErr() error {
	return fmt.Errorf("%w: %w", ErrConnLost, c.err)
}

// frameReader is the receive side's state: it reads frames from src and dispatches
// them. Whoever holds the reading role (the reader goroutine, a goroutine that took
// over from an Inline function, or with Options.CallerReads a caller) calls step, one
// frame at a time, or run, until reading ends. A read deadline interrupts step without
// losing anything, part of a frame included, so that the next step, on any goroutine,
// goes on where it stopped; any other error is sticky.
type frameReader struct {
	c    *Conn
	src  frameSource
	part partFrame
	err  error // the error that ended reading; every later step returns it
}

// frameSource is where a frameReader gets a frame's bytes: a Unix socket on Linux,
// which passes descriptors (fdReader), or a bufio.Reader (plainReader).
type frameSource interface {
	// header reads, checks and consumes the next frame's header, and returns the
	// descriptors passed with the frame (nil for none).
	header() (frame.Header, []int, error)
	// readSome reads the next bytes of the stream into p (non-empty).
	readSome(p []byte) (int, error)
	// buffered is how many bytes of the stream are read from the connection and not
	// yet consumed.
	buffered() int
	// arrived is buffered plus, where the system tells, the bytes waiting in the
	// socket: what the peer is known to have sent and this side has not consumed.
	arrived() int
	// frameDone is called once a frame has been read whole; it reports whether bytes
	// of further frames are buffered.
	frameDone() (more bool)
	// discard closes the descriptors received and not yet attached to a frame.
	discard()
}

// partFrame is a frame being read: a deadline may interrupt its reading anywhere, and
// the next holder of the reading role goes on with all of it, its staging, Budget
// bytes and clock included.
type partFrame struct {
	started  bool // the header is read (and the descriptors attached)
	f        frame.Frame
	fds      []int  // descriptors passed with it
	size     int    // the length of its meta and body
	buf      []byte // meta and body; while len(buf) < size, a staging buffer (see framebuf.go)
	got      int    // bytes of buf read
	reserved int64  // bytes of Options.Budget it holds (see reserve)
	timed    bool   // its clock runs (see sweep.go)
}

// isDeadline reports whether err is a read deadline's: the reading role is wanted
// elsewhere, or a caller reading for its own response has waited long enough.
func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// run reads and dispatches frames until the Conn fails, or returns errHandedOff when
// another goroutine has taken over reading (and then leaves the state to it).
func (r *frameReader) run() (err error) {
	defer func() {
		if err != errHandedOff {
			r.discard()
		}
	}()
	for {
		if err := r.step(); err != nil {
			return err
		}
	}
}

// discard closes every descriptor received and not delivered, and lets go of what an
// incomplete frame holds: reading has ended. run does it; whoever calls step in a loop
// of its own must, when reading ends.
func (r *frameReader) discard() {
	r.src.discard()
	closeFDs(r.part.fds)
	r.part.fds = nil
	r.endFrame()
}

// step reads one frame and dispatches it.
func (r *frameReader) step() error {
	if r.err != nil {
		return r.err
	}
	if err := r.readFrame(); err != nil {
		if !isDeadline(err) && err != errBudgetWait {
			r.err = err
		}
		return err
	}
	f, fds := r.part.f, r.part.fds
	r.part = partFrame{}
	if cause := r.c.failed.Load(); cause != nil {
		// Fail was called: the Conn is ending, and nothing more is dispatched.
		closeFDs(fds)
		r.err = *cause
		return r.err
	}
	r.c.readerMore.Store(r.src.frameDone())
	if err := r.c.dispatch(f, newFiles(fds)); err != nil {
		if err != errHandedOff {
			r.err = err
		}
		return err
	}
	return nil
}

// readFrame reads the next frame into r.part, resuming one a deadline interrupted.
func (r *frameReader) readFrame() error {
	p := &r.part
	if !p.started {
		h, fds, err := r.src.header()
		if err != nil {
			return err
		}
		*p = partFrame{started: true, f: frame.Frame{Header: h}, fds: fds, size: int(h.MetaLen) + int(h.BodyLen)}
		if err := r.beginFrame(); err != nil {
			return err
		}
	}
	for p.got < p.size {
		if p.got == len(p.buf) {
			if err := r.grow(); err != nil {
				return err
			}
		}
		n, err := r.src.readSome(p.buf[p.got:])
		p.got += n
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: connection ended inside a %s frame", frame.ErrProtocol, p.f.Kind)
			}
			return err
		}
	}
	r.endFrame()
	if h := p.f.Header; p.size > 0 {
		p.f.Meta, p.f.Body = p.buf[:h.MetaLen:h.MetaLen], p.buf[h.MetaLen:]
	}
	return nil
}

// errHandedOff ends a reader goroutine whose role another goroutine has taken (Inline).
var errHandedOff = errors.New("ipc: reading handed off to another goroutine")

func (c *Conn) readLoop() {
	c.rd = c.newReader()
	c.readOn()
}

// readOn runs the receive side on this goroutine until the Conn fails (then fails
// what is pending and closes readerDone) or the role is handed off.
func (c *Conn) readOn() {
	var err error
	if c.opts.CallerReads {
		err = c.readLending()
	} else {
		err = c.rd.run()
	}
	if err == errHandedOff {
		return
	}
	defer close(c.readerDone)
	if c.reclaim != nil {
		c.reclaim.Stop()
	}
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: peer closed the connection", io.EOF)
	}
	if code := violationCode(err); code != "" {
		c.fail(code, err)
	}
	if c.failed.Load() != nil {
		c.endAfterFlush() // the peer is told why first
	}
	c.Abort(err)
	if c.watched {
		watch.remove(c)
	}
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

// Buffered reports whether the reader holds bytes of further frames it has not
// dispatched yet: a Handler may use it to tell a lone request from a burst.
func (c *Conn) Buffered() bool { return c.readerMore.Load() }

// newReader makes the receive side's state. On Linux Unix sockets the reader is
// descriptor-aware (see fdReader); elsewhere it reads through a bufio.Reader and a
// frame that declares descriptors is a protocol violation.
func (c *Conn) newReader() *frameReader {
	src := newFDSource(c)
	if src == nil {
		p := &plainReader{c: c, br: bufio.NewReaderSize(countingReader{c}, initialReadBufferSize)}
		if sc, ok := c.nc.(syscall.Conn); ok {
			rc, _ := sc.SyscallConn()
			p.q = newSocketQueue(rc)
		}
		src = p
	}
	return &frameReader{c: c, src: src}
}

// plainReader reads frames through a bufio.Reader: every transport but Linux Unix
// sockets.
type plainReader struct {
	c  *Conn
	br *bufio.Reader
	q  socketQueue
}

func (p *plainReader) header() (frame.Header, []int, error) {
	hb, err := p.br.Peek(frame.HeaderSize)
	if err != nil {
		if len(hb) > 0 && errors.Is(err, io.EOF) {
			return frame.Header{}, nil, fmt.Errorf("%w: connection ended inside a frame header (%d of %d bytes)", frame.ErrProtocol, len(hb), frame.HeaderSize)
		}
		return frame.Header{}, nil, err
	}
	h, err := frame.ParseHeader(hb, p.c.opts.Limits)
	if err != nil {
		return frame.Header{}, nil, err
	}
	if h.FDs != 0 {
		return frame.Header{}, nil, fmt.Errorf("%w: frame declares %d file descriptors, but this connection does not pass descriptors", frame.ErrProtocol, h.FDs)
	}
	_, _ = p.br.Discard(frame.HeaderSize)
	return h, nil, nil
}

func (p *plainReader) readSome(b []byte) (int, error) { return p.br.Read(b) }

func (p *plainReader) buffered() int { return p.br.Buffered() }

func (p *plainReader) arrived() int { return p.br.Buffered() + p.q.queued() }

func (p *plainReader) frameDone() bool { return p.br.Buffered() > 0 }

func (p *plainReader) discard() {} // no descriptors on this transport

// checkFDKind is called for a frame that passes descriptors: only responses, and frames
// for a FileHandler, may.
func (c *Conn) checkFDKind(h frame.Header) error {
	switch h.Kind {
	case frame.KindResponse:
		return nil
	case frame.KindError, frame.KindPing, frame.KindPong, frame.KindHello, frame.KindWelcome:
		return fmt.Errorf("%w: %s frame declares %d file descriptors; only responses and requests pass descriptors", frame.ErrProtocol, h.Kind, h.FDs)
	}
	if c.opts.FileHandler == nil {
		return fmt.Errorf("%w: %s frame declares %d file descriptors, but this connection does not accept descriptors", frame.ErrProtocol, h.Kind, h.FDs)
	}
	return nil
}

// dispatch acts on one received frame. files are the descriptors passed with it (nil
// for most frames; the reader has checked them with checkFDKind): dispatch hands them on
// or closes them.
//
// It returns errHandedOff when the Handler ran an Inline function that outlived its
// time: another goroutine reads now.
func (c *Conn) dispatch(f frame.Frame, files []*os.File) (err error) {
	h := f.Header
	gen := c.role.Load()
	defer func() {
		if c.role.Load() != gen {
			err = errHandedOff
		}
	}()
	if c.heartbeats {
		c.lastRecv.Store(time.Now().UnixNano())
	}
	// Answers to abandoned calls are dropped quietly, but an answer to an id this
	// side never issued is a broken or hostile peer.
	if (h.Kind == frame.KindResponse || h.Kind == frame.KindError && h.ID != 0) && h.ID > c.nextID.Load() {
		closeFiles(files)
		return fmt.Errorf("%w: %s for request %d, which was never sent", frame.ErrProtocol, h.Kind, h.ID)
	}
	switch h.Kind {
	case frame.KindResponse:
		c.complete(h.ID, result{f: f, files: files})
		c.completed = true
	case frame.KindError:
		fe := &FrameError{Code: string(f.Meta), Message: string(f.Body)}
		if h.ID == 0 {
			return fe // a connection-level error from the peer
		}
		c.complete(h.ID, result{f: f, err: fe})
		c.completed = true
	case frame.KindPing:
		if err := c.Send(frame.Header{Kind: frame.KindPong, ID: h.ID}, nil, nil); err != nil {
			return err
		}
	case frame.KindPong:
	case frame.KindHello, frame.KindWelcome:
		return fmt.Errorf("%w: unexpected %s frame after the handshake", frame.ErrProtocol, h.Kind)
	default:
		if h.ID != 0 {
			c.owed.Add(1) // a request: its answer will be owed
		}
		if c.opts.CallerReads {
			c.pushed() // frames come unasked: keep the role's reclaim prompt
		}
		switch {
		case c.opts.FileHandler != nil:
			c.opts.FileHandler(c, f, files)
		case c.opts.Handler != nil:
			c.opts.Handler(c, f)
		default:
			return fmt.Errorf("%w: unexpected %s frame", frame.ErrProtocol, h.Kind)
		}
	}
	return nil
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
	if c.opts.Heartbeat > 0 {
		t := time.NewTicker(c.opts.Heartbeat)
		defer t.Stop()
		tick = t.C
	}
	var spare []byte
	var spareFDs []fdFrame
	for {
		held := false // this goroutine holds c.writing
		select {
		case <-c.done:
			return
		case <-c.wake:
			// Woken for a backlog: the senders that made it are likely still
			// running. Let them queue more before the write, so that one write
			// carries many frames (the peer then also reads them in one go).
			c.wmu.Lock()
			small := len(c.wbuf) < coalesceBelow
			c.wmu.Unlock()
			if small {
				runtime.Gosched()
			}
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
			if c.writing && !held {
				// A sender is writing directly; it wakes us if it leaves a backlog.
				c.wmu.Unlock()
				break
			}
			out, marks := c.wbuf, c.wfds
			if len(out) == 0 {
				c.writing = false
				if c.flushed != nil {
					close(c.flushed)
					c.flushed = nil
				}
				c.wmu.Unlock()
				break
			}
			c.wbuf, c.wfds = spare[:0], spareFDs[:0]
			c.writing, held = true, true
			c.wmu.Unlock()
			if err := c.writeOut(out, marks); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					err = fmt.Errorf("%w: the peer read nothing for %v", ErrHeartbeatTimeout, c.opts.HeartbeatTimeout)
				}
				c.Abort(fmt.Errorf("write: %w", err))
				return
			}
			if c.heartbeats {
				c.lastSend.Store(time.Now().UnixNano())
			}
			if cap(out) <= maxReusedWriteBuffer {
				spare = out[:0]
			} else {
				spare = nil
				recycle(out)
			}
			clear(marks) // drop the closed fd slices
			spareFDs = marks[:0]
		}
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

// Bytes returns how many bytes the Conn has read from the peer and written to it.
func (c *Conn) Bytes() (in, out uint64) { return c.bytesIn.Load(), c.bytesOut.Load() }

// countingReader reads c's socket for a bufio.Reader, counting what it reads.
type countingReader struct{ c *Conn }

func (r countingReader) Read(b []byte) (int, error) {
	n, err := r.c.nc.Read(b)
	r.c.bytesIn.Add(uint64(n))
	return n, err
}

// setWriteDeadline arms the write deadline: a peer that stops reading must not park the
// writer (and with it the heartbeat check) forever, so a write that makes no progress
// for the heartbeat timeout ends the Conn.
func (c *Conn) setWriteDeadline() {
	if c.opts.Heartbeat > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.opts.HeartbeatTimeout))
	}
}

// Context returns a context that is cancelled when the Conn ends.
func (c *Conn) Context() context.Context { return c.ctx }

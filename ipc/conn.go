package ipc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// A Conn's life: it ends once, when closeOnce records the cause in err and then closes
// done, so err is read only after done is closed. Every other piece of a Conn's state
// has one owner, named where the field is declared and at the top of the file that
// uses it. Locks (pmu, wmu, and the process-wide ones of the Inline watch, the
// FrameTimeout sweeper, the staging spare and Budget) are leaves: none is held while
// another is taken, so they have no order to keep.

// Defaults for Options fields left zero.
const (
	defaultMaxQueue         = 64 << 20
	defaultHeartbeat        = time.Second
	defaultHeartbeatTimeout = 10 * time.Second
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
	// allowed to grow this process's memory. Default 64 MiB.
	MaxQueue int
	// Heartbeat is how long the Conn may send nothing before it sends a ping.
	// Default 1 s; negative disables pings and the silence check.
	Heartbeat time.Duration
	// HeartbeatTimeout is how long the peer may stay silent (no frame of any kind, pongs
	// included) before the Conn is closed with ErrHeartbeatTimeout. Default 10 s.
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
	// On a Conn whose peer has never sent a frame unasked (pings aside), the window
	// stretches to up to 50 ms (5 ms after RestBriefly); ReadNow ends it at once (when
	// the peer is known to be leaving, say).
	// Inline must not be used on such a Conn.
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
	// Set by NewConn and Start, before the goroutines start; read-only after.
	nc         net.Conn
	opts       Options
	peer       PeerCred
	log        *slog.Logger
	heartbeats bool // Options.Heartbeat > 0: keep lastRecv and lastSend
	direct     bool // nc takes non-blocking writes from any goroutine (see writeDirect)

	// The Conn's end (this file): closeOnce writes err, then closes done.
	closeOnce  sync.Once
	err        error // the first cause; read only once done is closed
	done       chan struct{}
	ctx        context.Context // cancelled with done
	cancel     context.CancelFunc
	failed     atomic.Pointer[error] // the cause given to Fail, set once (see fail.go)
	failEnd    sync.Once             // ends a failing Conn (endAfterFlush)
	readerDone chan struct{}
	writerDone chan struct{}

	// Calls (call.go): pmu guards pending.
	nextID  atomic.Uint64
	pmu     sync.Mutex // a leaf: held while taking no other lock
	pending map[uint64]*call

	// The send side (send.go): wmu guards the queue, dbuf and writing; the holder of
	// writing owns the socket's send side and dw.
	wmu     sync.Mutex    // a leaf: held while taking no other lock
	wclosed bool          // CloseSend was called: no more frames may be queued
	wbuf    []byte        // queued frames not yet handed to the socket
	wfds    []fdFrame     // the frames in wbuf that carry descriptors, in order
	writing bool          // someone (the writer, or a sender writing directly) holds the socket's send side
	flushed chan struct{} // made by waitFlushed; closed and cleared when everything queued was written
	wake    chan struct{} // capacity 1: "wbuf became non-empty"
	dw      directWriter
	dbuf    []byte // the last direct write's buffer, for the next one (see send)

	// Signs of load, which make a sender queue its frame for the writer (which
	// coalesces) rather than write it directly: answers owed to the peer (requests
	// handed to the Handler and not yet answered), and the reader holding further
	// frames it has not dispatched yet. Pays: throughput 4.4 → 7.4 µs a call when
	// such senders write directly too (1.7×, IQR 1.5–1.9; 40 interleaved pairs on 2
	// loaded cores).
	owed       atomic.Int64
	readerMore atomic.Bool

	// The receive side (recv.go), owned by whoever holds the reading role.
	rd        *frameReader
	rdl       time.Time // the read deadline set on nc
	completed bool      // the last frame dispatched completed a call
	watched   bool      // the Conn is in the Inline watch's set

	// The reading role's hand-off (role.go): role says which goroutine holds it
	// (Inline), lend whether a caller does (Options.CallerReads).
	role         atomic.Uint64
	inlineEnd    atomic.Int64
	lend         atomic.Int32
	lendBack     chan struct{} // capacity 1: the role is the reader goroutine's again
	reclaim      *time.Timer   // gives a role left free back to the reader goroutine
	reclaimAfter time.Duration // how long the role may stay free
	freedAt      atomic.Int64  // monotonic nanoseconds when the role was last left free
	reclaimArmed atomic.Bool   // reclaim is set (or its function is running)
	reclaimWait  atomic.Int64  // the reclaim's period now, nanoseconds: reclaimAfter, longer while calls keep the role busy
	unasked      atomic.Bool   // the peer has sent a frame unasked (pings aside): the period stretches to reclaimMax only
	readNow      atomic.Bool   // set by ReadNow: a holder about to leave the role free reads on instead

	// Counters, each written by one side and read by anyone.
	lastRecv          atomic.Int64  // unix nanos of the last frame read
	lastSend          atomic.Int64  // unix nanos of the last write
	bytesIn, bytesOut atomic.Uint64 // read from and written to the socket (see Bytes)
}

// NewConn wraps nc, whose handshake is already done. peer is what the listener learned
// about the other side (zero on the dialing side). Nothing is read or written until
// Start, so the caller can finish wiring its own state (which its Handler may use)
// first.
func NewConn(nc net.Conn, peer PeerCred, opts Options) *Conn {
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = defaultMaxQueue
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = defaultHeartbeat
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = defaultHeartbeatTimeout
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
	c.direct = c.dw.init(nc)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	now := time.Now().UnixNano()
	c.lastRecv.Store(now)
	c.lastSend.Store(now)
	return c
}

// Start starts the reader and writer goroutines. Call it exactly once.
func (c *Conn) Start() {
	c.reclaimWait.Store(int64(c.reclaimAfter)) // tests may have changed it
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
	c.Wait()
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

func (c *Conn) lostErr() error {
	return fmt.Errorf("%w: %w", ErrConnLost, c.err)
}

// Bytes returns how many bytes the Conn has read from the peer and written to it.
func (c *Conn) Bytes() (in, out uint64) { return c.bytesIn.Load(), c.bytesOut.Load() }

// Context returns a context that is cancelled when the Conn ends.
func (c *Conn) Context() context.Context { return c.ctx }

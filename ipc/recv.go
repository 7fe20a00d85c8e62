package ipc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// The receive path: rd and the Conn's rdl, completed and watched belong to the
// goroutine that holds the reading role (see role.go); only it calls rd.step, so
// frames are dispatched one at a time, in order.

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

// dispatch acts on one received frame. files are the descriptors passed with it (nil
// for most frames; the reader has checked them with checkFDKind): dispatch hands them on
// or closes them.
//
// It returns errHandedOff when the Handler ran an Inline function that outlived its
// time: another goroutine reads now.
func (c *Conn) dispatch(f frame.Frame, files []*os.File) (err error) {
	gen := c.role.Load()
	defer func() {
		if c.role.Load() != gen {
			err = errHandedOff
		}
	}()
	if c.heartbeats {
		c.lastRecv.Store(time.Now().UnixNano())
	}
	switch h := f.Header; h.Kind {
	case frame.KindResponse, frame.KindError:
		return c.answer(f, files)
	case frame.KindPing:
		return c.Send(frame.Header{Kind: frame.KindPong, ID: h.ID}, nil, nil)
	case frame.KindPong:
		return nil
	case frame.KindHello, frame.KindWelcome:
		return fmt.Errorf("%w: unexpected %s frame after the handshake", frame.ErrProtocol, h.Kind)
	}
	return c.handle(f, files)
}

// answer completes the call that f, a response or an error frame, answers. An error
// frame with id 0 is the peer's about the whole connection: it ends reading.
func (c *Conn) answer(f frame.Frame, files []*os.File) error {
	h := f.Header
	if h.Kind == frame.KindError && h.ID == 0 {
		return &FrameError{Code: string(f.Meta), Message: string(f.Body)}
	}
	// Answers to abandoned calls are dropped quietly, but an answer to an id this
	// side never issued is a broken or hostile peer.
	if h.ID > c.nextID.Load() {
		closeFiles(files)
		return fmt.Errorf("%w: %s for request %d, which was never sent", frame.ErrProtocol, h.Kind, h.ID)
	}
	r := result{f: f, files: files}
	if h.Kind == frame.KindError {
		r = result{f: f, err: &FrameError{Code: string(f.Meta), Message: string(f.Body)}}
	}
	c.complete(h.ID, r)
	c.completed = true
	return nil
}

// handle gives f, a frame the peer sent unasked, to the Handler (or the FileHandler).
func (c *Conn) handle(f frame.Frame, files []*os.File) error {
	if f.ID != 0 {
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
		return fmt.Errorf("%w: unexpected %s frame", frame.ErrProtocol, f.Kind)
	}
	return nil
}

// countingReader reads c's socket for a bufio.Reader, counting what it reads.
type countingReader struct{ c *Conn }

func (r countingReader) Read(b []byte) (int, error) {
	n, err := r.c.nc.Read(b)
	r.c.bytesIn.Add(uint64(n))
	return n, err
}

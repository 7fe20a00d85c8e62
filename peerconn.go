package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/ipc"
)

// peerConn is the Leader's side of one Follower connection; it is also that Follower's
// sink in the topic table.
type peerConn struct {
	l      *leader
	conn   *ipc.Conn
	hello  frame.Hello
	ctx    context.Context // ends with the connection or the term
	cancel context.CancelFunc
	sem    chan struct{} // bounds in-flight Service calls from this connection

	acked   chan struct{} // closed when the Follower acknowledged our goodbye
	ackOnce sync.Once

	// Requests run on this connection's workers (see dispatch): work hands a request
	// to an idle one; workers counts them all.
	work    chan job
	workers atomic.Int32
	idle    atomic.Int32
	// execAvg (nanoseconds) is the moving average of this connection's requests'
	// run time; until slowUntil (unix nanos) they go to workers (see inlineBudget).
	execAvg   atomic.Int64
	slowUntil atomic.Int64
	names     map[string]string // interned method and topic names; reader goroutine only

	// The invoke requests of one read, for a batch (see hold); heldMu is a leaf.
	heldMu    sync.Mutex
	held      []*Call
	heldEnded bool // the connection ended: nothing is held any more

	// The Follower's subscriptions and registrations belong to the term's owner (see
	// owner.go), as does what they count against Config.Limits.
	subs   map[subKey]struct{}     // nil once the connection ended
	regs   map[uint64]registration // the Follower's live registrations; nil once ended
	regSeq uint64                  // orders regs
	// Places taken by requests still running, so that concurrent ones cannot pass a
	// limit together: subscriptions, registrations and their bytes (see subscribe
	// and register).
	subsTaken, regsTaken, regBytesTaken int
	regBytes                            int // the payload bytes of regs

	// inflight holds the ids of the requests being served: a second request with the
	// same id breaks the protocol (ids are unique among those in flight). A leaf lock
	// guards it: every request takes it, and requests do not pass through the owner.
	idsMu    sync.Mutex
	inflight map[uint64]struct{}

	fdsHeld atomic.Int64 // descriptors passed with requests being served (Limits.MaxFDs)

	at             time.Time     // when the Follower was welcomed
	served, failed atomic.Uint64 // requests served, and of them answered with an error (Status)
}

// handle runs on the reader goroutine. Requests run there (a lone quick one, see
// inlineBudget) or on the connection's workers (see dispatch); at most
// Limits.MaxInflight at once, after which reading this connection waits.
// It owns files: only invoke, oneway and publish requests may pass them.
func (pc *peerConn) handle(conn *ipc.Conn, f frame.Frame, files []*os.File) {
	if pc.l.batch == nil {
		pc.handleFrame(conn, f, files, true)
		return
	}
	// reader: this goroutine still reads the connection. A batch run inline that
	// blocks hands reading to another goroutine (ipc.Conn.Inline); this one then
	// finishes the frame as a worker would, and must not run Inline again nor touch
	// what is the reader's (the requests held, the names). The invoke requests, held
	// and flushed by the reader alone, reach the batcher in the order they were read.
	reader := true
	if f.Kind != frame.KindInvoke {
		reader = pc.flush() // the requests read before this frame go first
	}
	reader = pc.handleFrame(conn, f, files, reader)
	if reader && !conn.Buffered() {
		pc.flush() // the read's last frame: the invoke requests held make a batch
	}
}

// handleFrame is handle for one frame; an invoke request for a BatchInvoker is held
// (see hold). reader says whether this goroutine is the connection's reader (always so
// for an invoke request); it returns whether it still is.
func (pc *peerConn) handleFrame(conn *ipc.Conn, f frame.Frame, files []*os.File, reader bool) bool {
	switch f.Kind {
	case frame.KindInvoke, frame.KindOneway, frame.KindPublish:
	case frame.KindSubscribe, frame.KindUnsubscribe, frame.KindRegister, frame.KindWithdraw:
		if len(files) > 0 {
			closeFiles(files)
			conn.Fail(frame.CodeProtocol, fmt.Errorf("%w: %s frame passes %d file descriptors; only invoke, oneway and publish may", frame.ErrProtocol, f.Kind, len(files)))
			return reader
		}
	case frame.KindGoodbye: // the Follower acknowledges our goodbye: nothing follows
		closeFiles(files)
		pc.ackOnce.Do(func() { close(pc.acked) })
		return reader
	case frame.KindStatus: // a member asks for the Leader's view (Client.LeaderStatus)
		if len(files) > 0 {
			closeFiles(files)
			conn.Fail(frame.CodeProtocol, fmt.Errorf("%w: status frame passes %d file descriptors", frame.ErrProtocol, len(files)))
			return reader
		}
		pc.l.answerStatus(conn, f, pc.hello.MaxBody)
		return reader
	default:
		closeFiles(files)
		conn.Fail(frame.CodeProtocol, fmt.Errorf("%w: unexpected %s frame from a follower", frame.ErrProtocol, f.Kind))
		return reader
	}
	if len(f.Meta) == 0 {
		closeFiles(files)
		conn.Fail(frame.CodeProtocol, fmt.Errorf("%w: %s frame with an empty method or topic name", frame.ErrProtocol, f.Kind))
		return reader
	}
	if !pc.l.calls.enter() {
		closeFiles(files)
		if f.Kind != frame.KindOneway {
			_ = conn.ReplyError(f.ID, frame.CodeClosed, "leader is handing over; retry on the next leader")
		}
		return reader
	}
	var waited time.Time
	select {
	case pc.sem <- struct{}{}:
	default:
		waited = time.Now() // the caller's time runs while this request waits
		if pc.l.batch != nil && reader {
			// The requests held may be what fills sem. Reading waits for a place
			// anyway: their batch runs on another goroutine and this one stays the
			// reader, so that no later request can pass this one.
			pc.flushAside()
		}
		select {
		case pc.sem <- struct{}{}:
		case <-conn.Done():
			closeFiles(files)
			pc.l.calls.leave()
			return reader
		}
	}
	if err := pc.admit(f, len(files)); err != nil {
		closeFiles(files)
		<-pc.sem
		pc.l.calls.leave()
		var le *limitError
		if !errors.As(err, &le) {
			conn.Fail(frame.CodeProtocol, err) // a protocol violation
			return reader
		}
		pc.l.c.refused.note(slog.LevelWarn, le.limit, conn.Peer(), err)
		if f.Kind != frame.KindOneway {
			_ = conn.ReplyError(f.ID, frame.CodeLimit, le.msg)
		}
		return reader
	}
	j := job{f: f, files: files, waited: waited}
	if reader {
		j.name = pc.intern(f.Meta)
	} else {
		j.name = string(f.Meta)
	}
	if f.Kind == frame.KindInvoke && pc.l.batch != nil {
		pc.hold(j)
		return reader
	}
	if conn.Buffered() || time.Duration(pc.execAvg.Load()) > inlineBudget || time.Now().UnixNano() < pc.slowUntil.Load() {
		pc.dispatch(j) // a burst, or a Service that is slow: run in parallel
		return reader
	}
	if !reader {
		pc.timedExec(j)
		return false
	}
	if !conn.Inline(takeoverAfter, func() { pc.timedExec(j) }) {
		pc.slowUntil.Store(time.Now().Add(inlineCooldown).UnixNano())
		return false
	}
	return true
}

// timedExec runs j and folds its duration into execAvg.
func (pc *peerConn) timedExec(j job) {
	start := time.Now()
	pc.exec(j)
	d := int64(time.Since(start))
	avg := pc.execAvg.Load()
	pc.execAvg.Store(avg + (d-avg)/8) // concurrent workers may lose an update: it is an estimate
}

// job is one request for a worker: its frame, the files passed with it and its method
// or topic name.
type job struct {
	f      frame.Frame
	files  []*os.File
	name   string
	waited time.Time // when it began to wait for a place (Limits.MaxInflight), if it did
}

// deadline is when j's caller stops waiting for its answer, from the time the
// request carries, counted from when the Leader had it in hand; ok is false if it
// carries none.
func (j job) deadline() (d time.Time, ok bool) {
	if j.f.Timeout == 0 {
		return time.Time{}, false
	}
	from := j.waited
	if from.IsZero() {
		from = time.Now()
	}
	return from.Add(msDuration(j.f.Timeout)), true
}

// expired reports whether j, an invoke or publish request, waited for a place past
// its caller's deadline; it is then answered as timed out, without reaching the
// Service (its caller has given up on it).
func (pc *peerConn) expired(j job) bool {
	if j.waited.IsZero() || (j.f.Kind != frame.KindInvoke && j.f.Kind != frame.KindPublish) {
		return false
	}
	if d, ok := j.deadline(); !ok || time.Now().Before(d) {
		return false
	}
	pc.reply(j.f.ID, errTimeout(requestOp(j.f.Kind), j.name))
	closeFiles(j.files)
	pc.finish(j.f, len(j.files))
	return true
}

// A lone request (nothing more buffered behind it) runs on the connection's reader, with
// no goroutine switch, while this connection's requests take under inlineBudget on
// average (a moving average of the last eight or so); otherwise, and in a burst,
// requests go to workers and run in parallel. A request that blocks on the reader holds
// up the connection for about takeoverAfter (rounded up to the ipc watch's tick) before
// another goroutine takes over reading (ipc.Conn.Inline); then requests go to workers
// for inlineCooldown.
const (
	inlineBudget   = 100 * time.Microsecond
	takeoverAfter  = 200 * time.Microsecond
	inlineCooldown = time.Second
)

const (
	// coreWorkers of a connection's workers, once started, wait for work until the
	// connection ends; the others end after workerIdle without any.
	coreWorkers = 4
	workerIdle  = 2 * time.Second
	// maxInterned and maxInternedLen bound a connection's table of names.
	maxInterned    = 256
	maxInternedLen = 64
)

// dispatch hands j to an idle worker, or starts one: a request never waits for another
// to finish (the Service may block), and a connection that keeps sending costs no
// goroutine per request. Runs on the reader goroutine, or on one that handed reading
// on (see handle).
func (pc *peerConn) dispatch(j job) {
	select {
	case pc.work <- j:
	default:
		core := pc.workers.Add(1) <= coreWorkers
		go pc.worker(j, core)
	}
}

// worker runs j, then the requests dispatch hands it, until the connection ends (or,
// unless core, it has been idle for workerIdle). The gate (calls) counts the requests
// it runs, not its idle waits.
func (pc *peerConn) worker(j job, core bool) {
	defer pc.workers.Add(-1)
	var idle <-chan time.Time
	var t *time.Timer
	if !core {
		t = time.NewTimer(workerIdle)
		defer t.Stop()
		idle = t.C
	}
	for {
		pc.timedExec(j)
		if t != nil {
			t.Reset(workerIdle)
		}
		pc.idle.Add(1)
		select {
		case j = <-pc.work:
			pc.idle.Add(-1)
		case <-pc.ctx.Done():
			pc.idle.Add(-1)
			return
		case <-idle:
			pc.idle.Add(-1)
			return
		}
	}
}

// intern returns b as a string from the connection's table of names, so that names a
// Follower repeats cost no allocation. Runs on the reader goroutine.
func (pc *peerConn) intern(b []byte) string {
	if s, ok := pc.names[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(s) <= maxInternedLen && len(pc.names) < maxInterned {
		if pc.names == nil {
			pc.names = make(map[string]string)
		}
		pc.names[s] = s
	}
	return s
}

// request decodes the Message of an invoke, oneway or publish frame, under a lease the
// caller releases when the Service is done with it. ok is false when the request was
// answered (or the connection aborted) instead.
func (pc *peerConn) request(f frame.Frame, files []*os.File) (m Message, ok bool) {
	m, err := decodeMessage(f, files, pc.l.c.cfg.MaxBlob)
	if err != nil {
		switch {
		case errors.Is(err, frame.ErrProtocol):
			pc.conn.Fail(frame.CodeProtocol, err)
		case f.Kind != frame.KindOneway:
			_ = pc.conn.ReplyError(f.ID, frame.CodeTooLarge, fmt.Sprintf("cluster: %s %q: the request: %v", requestOp(f.Kind), f.Meta, err))
		default:
			pc.l.c.refused.note(slog.LevelWarn, "oneway", pc.conn.Peer(), fmt.Errorf("oneway invoke %q refused: %w", f.Meta, err))
		}
		return Message{}, false
	}
	m, _ = own(m) // a fresh Message: own cannot fail
	return m, true
}

// admit takes what a request holds while it is served: its id among those in flight,
// and the descriptors passed with it, under Limits.MaxFDs and the process's descriptor
// headroom. exec gives them back (done). A duplicate id is a protocol violation; the
// rest are limitErrors.
func (pc *peerConn) admit(f frame.Frame, fds int) error {
	if f.ID != 0 {
		pc.idsMu.Lock()
		_, dup := pc.inflight[f.ID]
		if !dup {
			if pc.inflight == nil {
				pc.inflight = make(map[uint64]struct{})
			}
			pc.inflight[f.ID] = struct{}{}
		}
		pc.idsMu.Unlock()
		if dup {
			return fmt.Errorf("%w: request id %d is already in flight on this connection", frame.ErrProtocol, f.ID)
		}
	}
	if fds == 0 {
		return nil
	}
	lim := &pc.l.c.cfg.lim
	err := error(nil)
	if held := pc.fdsHeld.Add(int64(fds)); held > int64(lim.MaxFDs) {
		err = overLimit("MaxFDs", lim.MaxFDs, "this connection's requests would hold %d descriptors", held)
	} else if err = pc.l.adm.fds.room(fds, lim.FDHeadroom, pc.foreign()); err == nil {
		pc.l.adm.fds.add(fds, pc.foreign())
		return nil
	}
	pc.fdsHeld.Add(-int64(fds))
	pc.forget(f.ID)
	return err
}

// foreign reports whether the peer runs as another uid than the Leader.
func (pc *peerConn) foreign() bool {
	p := pc.conn.Peer()
	return p.Known && p.UID != pc.l.adm.self
}

// subscribe subscribes the Follower to key, within a place it takes under
// Limits.MaxSubscriptions (a topic this connection already subscribes to takes none)
// until addSink returned. ended: the connection or the term ended, nothing to answer.
func (pc *peerConn) subscribe(ctx context.Context, key subKey) (ended bool, err error) {
	ended = true
	pc.l.call(func(*termState) {
		if ended = pc.subs == nil; ended {
			return
		}
		if _, ok := pc.subs[key]; !ok {
			max := pc.l.c.cfg.lim.MaxSubscriptions
			if n := len(pc.subs) + pc.subsTaken; n >= max {
				err = overLimit("MaxSubscriptions", max, "this connection subscribes to %d topics", n)
				return
			}
		}
		pc.subsTaken++
	})
	if ended || err != nil {
		return ended, err
	}
	err = pc.l.addSink(ctx, key.topic, pc, key.shared)
	kept := false
	pc.l.call(func(*termState) {
		pc.subsTaken--
		if kept = err == nil && pc.subs != nil; kept {
			pc.subs[key] = struct{}{}
		}
	})
	if err == nil && !kept { // the connection ended meanwhile: undo
		pc.l.removeSink(key.topic, pc, key.shared)
	}
	return false, err
}

// unsubscribe ends the Follower's subscription of key.
func (pc *peerConn) unsubscribe(key subKey) {
	pc.l.call(func(*termState) {
		if pc.subs != nil {
			delete(pc.subs, key)
		}
	})
	pc.l.removeSink(key.topic, pc, key.shared)
}

// done gives back what admit took for a request.
func (pc *peerConn) done(f frame.Frame, fds int) {
	if fds > 0 {
		pc.fdsHeld.Add(-int64(fds))
		pc.l.adm.fds.add(-fds, pc.foreign())
	}
	pc.forget(f.ID)
}

func (pc *peerConn) forget(id uint64) {
	if id != 0 {
		pc.idsMu.Lock()
		delete(pc.inflight, id)
		pc.idsMu.Unlock()
	}
}

func (pc *peerConn) exec(j job) {
	if pc.expired(j) {
		return
	}
	f, files := j.f, j.files
	defer pc.finish(f, len(files))
	ctx := pc.ctx
	if d, ok := j.deadline(); ok {
		cc := withDeadline(ctx, d)
		defer cc.end()
		ctx = cc
	}
	l, name := pc.l, j.name
	var err error
	var shared bool
	if f.Kind == frame.KindSubscribe || f.Kind == frame.KindUnsubscribe {
		if shared, err = subscriptionMode(f.Body); err != nil {
			pc.conn.Fail(frame.CodeProtocol, err)
			return
		}
	}
	switch f.Kind {
	case frame.KindInvoke, frame.KindOneway:
		req, ok := pc.request(f, files)
		if !ok {
			return
		}
		defer release(req)
		var out Message
		out, err = l.svc.invoke(ctx, name, req)
		if f.Kind == frame.KindOneway {
			_ = out.Close()
			if err != nil {
				pc.failed.Add(1)
				l.c.cfg.Logger.Warn("cluster: oneway invoke failed", "method", name, "peer", pc.conn.Peer(), "err", errText(err))
			}
			return
		}
		pc.answerInvoke(ctx, f.ID, name, out, err)
		return
	case frame.KindPublish:
		msg, ok := pc.request(f, files)
		if !ok {
			return
		}
		defer release(msg)
		if err = l.svc.publish(ctx, name, msg); err != nil {
			err = l.c.serviceErr(ctx, "publish", name, err)
		}
	case frame.KindSubscribe:
		var ended bool
		if ended, err = pc.subscribe(ctx, subKey{name, shared}); ended {
			return
		}
	case frame.KindUnsubscribe:
		pc.unsubscribe(subKey{name, shared})
	case frame.KindRegister:
		err = pc.register(ctx, name, f.Body)
	case frame.KindWithdraw:
		err = pc.withdraw(ctx, name, f.Body)
	}
	pc.reply(f.ID, err)
}

// finish gives back what handle and admit took for a request, once it is answered.
func (pc *peerConn) finish(f frame.Frame, fds int) {
	pc.done(f, fds)
	pc.served.Add(1)
	<-pc.sem
	pc.l.calls.leave()
}

// hold keeps j, an invoke request for a BatchInvoker, for a batch, until the frames
// read with it have been handled too (see handle and batch.go). Only the reader holds
// requests and flushes them, so that they reach the batcher in the order they were
// read.
func (pc *peerConn) hold(j job) {
	if pc.expired(j) {
		return
	}
	req, ok := pc.request(j.f, j.files)
	if !ok {
		pc.finish(j.f, len(j.files))
		return
	}
	c := &Call{Method: j.name, Req: req, ctx: pc.ctx, pc: pc, f: j.f, files: j.files}
	if d, ok := j.deadline(); ok {
		c.deadline = d
		c.cc = withDeadline(pc.ctx, d)
		c.ctx = c.cc
	}
	pc.heldMu.Lock()
	ended := pc.heldEnded
	if !ended {
		pc.held = append(pc.held, c)
	}
	pc.heldMu.Unlock()
	if ended {
		pc.drop(c)
	}
}

// flush, on the reader goroutine, hands the requests held to the batcher and runs
// the batch if none is running, inside ipc.Conn.Inline. It returns whether this
// goroutine is still the reader.
func (pc *peerConn) flush() (reader bool) {
	if !pc.submitHeld() {
		return true
	}
	return pc.conn.Inline(takeoverAfter, pc.l.batch.run)
}

// flushAside is flush for a reader that is about to wait: the batch, if this reader
// must run it, runs on a new goroutine.
func (pc *peerConn) flushAside() {
	if pc.submitHeld() {
		go pc.l.batch.run()
	}
}

// submitHeld hands the requests held to the batcher, and reports whether the caller
// must run the batch (see batcher.submit).
func (pc *peerConn) submitHeld() (run bool) {
	pc.heldMu.Lock()
	held := pc.held
	pc.held = nil
	pc.heldMu.Unlock()
	return len(held) > 0 && pc.l.batch.submit(held)
}

// endHeld drops the requests held when the connection ends: none will be read after.
func (pc *peerConn) endHeld() {
	pc.heldMu.Lock()
	held := pc.held
	pc.held, pc.heldEnded = nil, true
	pc.heldMu.Unlock()
	for _, c := range held {
		pc.drop(c)
	}
}

// drop gives back what a held or batched request took: its request, its deadline's
// ctx, its place (finish). Unless it was answered (answer), its connection ended.
func (pc *peerConn) drop(c *Call) {
	release(c.Req)
	if c.cc != nil {
		c.cc.end()
	}
	pc.finish(c.f, len(c.files))
}

// answer sends a batched call's response, or its error, and gives back what the
// request took.
func (pc *peerConn) answer(c *Call, resp Message, err error) {
	pc.answerInvoke(c.ctx, c.f.ID, c.Method, resp, err)
	pc.drop(c)
}

// answerInvoke sends the outcome of the Service's Invoke of request id: out, or err as
// the caller sees it (serviceErr).
func (pc *peerConn) answerInvoke(ctx context.Context, id uint64, name string, out Message, err error) {
	if errors.Is(err, errTermOver) { // refused, not run: the next Leader takes it
		pc.reply(id, err)
		return
	}
	if err != nil {
		pc.reply(id, pc.l.c.serviceErr(ctx, "invoke", name, err))
		return
	}
	pc.respond(id, name, out)
}

// respond sends the Service's response to request id, then closes it: the Service gave
// it to us, and the Follower got duplicates of its descriptors.
func (pc *peerConn) respond(id uint64, name string, out Message) {
	defer out.Close()
	w, err := encodeMessage(pc.conn, out, int(pc.hello.MaxBody), "invoke", name, "the response")
	if err != nil {
		pc.reply(id, responseErr(err, name))
		return
	}
	_ = pc.conn.SendParts(frame.Header{Kind: frame.KindResponse, ID: id, Flags: w.flags}, nil, w.body, w.tail, w.files)
}

// reply answers a request with an empty response or the error's code and message.
func (pc *peerConn) reply(id uint64, err error) {
	if err == nil {
		_ = pc.conn.Reply(id, nil)
		return
	}
	if errors.Is(err, errNotSent) { // the term is over: the next Leader takes it
		_ = pc.conn.ReplyError(id, frame.CodeClosed, "leader is handing over; retry on the next leader")
		return
	}
	pc.failed.Add(1)
	code := frame.CodeRemote
	msg := err.Error()
	var le *limitError
	if errors.As(err, &le) {
		code = frame.CodeLimit
		pc.l.c.refused.note(slog.LevelWarn, le.limit, pc.conn.Peer(), err)
	} else if errors.Is(err, ErrTooLarge) {
		code = frame.CodeTooLarge
	} else if re, ok := err.(*RemoteError); ok {
		msg = re.Message
		switch {
		case re.panicked():
			code = frame.CodePanic
		case len(re.Codes) > 0:
			code, msg = frame.CodeRemoteCodes, string(frame.AppendRemoteCodes(nil, re.Codes, re.Message))
		}
	} else if isTimeout(err) {
		code = frame.CodeTimeout
	}
	_ = pc.conn.ReplyError(id, code, msg)
}

// subscriptionMode reads the body of a subscribe or unsubscribe frame.
func subscriptionMode(body []byte) (shared bool, err error) {
	switch {
	case len(body) == 0:
		return false, nil
	case len(body) == 1 && body[0] == frame.SubscribeShared:
		return true, nil
	}
	return false, fmt.Errorf("%w: subscribe body must be empty or 0x01, got %d bytes", frame.ErrProtocol, len(body))
}

// requestOp names a request kind as errors name operations.
func requestOp(k frame.Kind) string {
	if k == frame.KindPublish {
		return "publish"
	}
	return "invoke"
}

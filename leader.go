package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/ipc"
)

// The Leader's state for a term belongs to the term's owner (see owner.go), which holds
// no lock. The locks that remain, and the order in which they nest (a lock is only taken
// while holding those before it on its line):
//
//	topic.fan → the ipc.Conn's send lock              (emit fanning out to a Follower)
//	topic.fan → localSubs.mu → Subscription.mu        (emit fanning out to this process)
//	counters.bytesMu → a call to the owner            (Stats; a Follower's connection ending)
//
// The owner may take topic.fan (and what follows it) and leaves; it never takes
// counters.bytesMu and never waits for another goroutine. The leaves, each held alone:
// peerConn.idsMu (the ids of the requests in flight), gate.mu (calls), admission.mu and
// refusals.mu (limits.go). None of these is held while the Service runs. topic.fan,
// localSubs.mu and Subscription.mu are ranked (lockrank.go): the tests check their order
// at every acquisition.
//
// The process's own state, in every role:
//
//	registrations.op → registrations.mu
//	localTopic.opMu → localSubs.mu
//	localTopic.opMu → a call to the owner             (the Leader's own subscriptions)
//	counters.bytesMu → Client.epochMu
//
// registrations.op and localTopic.opMu are held across the call they order (to the
// Leader; on the Leader, into the Service: Publish, Subscribe and its cancel), so that
// a new Leader gets the registrations in order and a topic is subscribed once.

// leader is the backend of the member that holds the lock.
type leader struct {
	c      *Client
	term   uint64
	at     time.Time
	svc    service         // the Service, through the guards of usercode.go
	ctx    context.Context // the term: cancelled at the end of shutdown's drain
	cancel context.CancelFunc
	ln     listener
	tr     transport
	policy ipc.PeerPolicy

	calls   gate          // Service calls in progress, local and remote
	batch   *batcher      // nil unless the Service is a BatchInvoker
	oneways chan struct{} // the Leader's own oneway calls running (Limits.MaxInflight)

	// The term's owner (see owner.go) holds the rest of the term's state.
	ops     chan ownerOp  // functions for the owner to run
	ownStop chan struct{} // closed by shutdown to end the owner
	ownDone chan struct{} // closed when the owner has ended

	acceptDone chan struct{}
	serveWG    sync.WaitGroup // one per accepted connection; Add only from acceptLoop

	demoted  chan struct{} // closed when the claim no longer holds (see watchClaim)
	watchEnd chan struct{} // closed when watchClaim returned

	adm admission // connections and descriptors against Config.Limits

	budget       *ipc.Budget   // memory of the peers' incomplete frames (Limits.MaxPartialBytes); nil: none
	housekeepEnd chan struct{} // closed when housekeep returned
}

// claimCheckInterval is how often a Leader checks that its claim still holds (that its
// lock file was not deleted or replaced): a second Leader that a deleted lock file let
// in coexists with this one for at most about this long.
const claimCheckInterval = 250 * time.Millisecond

// watchClaim checks the claim until the term ends; when it no longer holds, it logs
// why and closes demoted, and the member steps down.
func (l *leader) watchClaim() {
	defer close(l.watchEnd)
	t := time.NewTicker(claimCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
			if err := l.tr.verify(); err != nil {
				l.c.cfg.Logger.Error("cluster: the leader's claim no longer holds; stepping down (do not delete or replace the lock file while members run)", "term", l.term, "err", err)
				close(l.demoted)
				return
			}
		}
	}
}

// startLeader runs right after the lock was won: listen, let the predecessor finish
// exiting, build the Service, then accept.
func (c *Client) startLeader(ctx context.Context, term uint64) (*leader, error) {
	// Listen first: Followers that connect while the predecessor finishes exiting and
	// the Service is built wait in the listener's backlog, and are welcomed at once.
	ln, err := c.tr.listen()
	if err != nil {
		c.tr.release()
		return nil, fmt.Errorf("leader (term %d): %w", term, err)
	}
	c.tr.settle()
	lctx, cancel := context.WithCancel(context.Background())
	// Close, or the end of Join's ctx, while NewService runs aborts it.
	stopLife := context.AfterFunc(c.life, cancel)
	stopJoin := context.AfterFunc(ctx, cancel)
	svc, err := c.newService(lctx)
	if stoppedLife, stoppedJoin := stopLife(), stopJoin(); !stoppedLife || !stoppedJoin {
		if err == nil {
			_ = svc.close()
		}
		err = fmt.Errorf("aborted: %w", context.Cause(lctx))
	}
	if err != nil {
		cancel()
		c.tr.release()
		if ctx.Err() != nil || c.life.Err() != nil {
			return nil, fmt.Errorf("NewService (term %d): %w", term, err)
		}
		return nil, fmt.Errorf("%w: cluster %q: this member won the election (term %d) and released the lock because NewService failed: %w",
			ErrServiceUnavailable, c.cfg.Name, term, err)
	}
	l := &leader{
		c: c, term: term, at: time.Now(), svc: svc, ctx: lctx, cancel: cancel, ln: ln, tr: c.tr,
		// Without peer credentials (TCP, or off Linux) the token or the 0700 Dir is the gate.
		policy:       ipc.PeerPolicy{UIDs: c.cfg.AllowUIDs, GIDs: c.cfg.AllowGIDs, AllowUnknown: !c.tr.peerCredsKnown()},
		ops:          make(chan ownerOp),
		ownStop:      make(chan struct{}),
		ownDone:      make(chan struct{}),
		acceptDone:   make(chan struct{}),
		demoted:      make(chan struct{}),
		watchEnd:     make(chan struct{}),
		adm:          admission{lim: &c.cfg.lim, self: uint32(os.Geteuid())},
		oneways:      make(chan struct{}, c.cfg.lim.MaxInflight),
		housekeepEnd: make(chan struct{}),
	}
	l.calls.init()
	if bi, ok := svc.svc.(BatchInvoker); ok {
		l.batch = newBatcher(l, bi)
	}
	l.adm.fds.calibrate()
	if n := c.cfg.lim.MaxPartialBytes; n > 0 {
		l.budget = ipc.NewBudget(n)
	}
	go l.own()
	go l.acceptLoop()
	go l.watchClaim()
	go l.housekeep()
	return l, nil
}

func (l *leader) info() RoleInfo {
	return RoleInfo{Role: RoleLeader, Term: l.term, LeaderPID: pid(), At: l.at}
}

func (l *leader) context() context.Context { return l.ctx }

func (l *leader) status(context.Context) (*Status, error) { return l.report(), nil }

func (l *leader) bytes() (in, out uint64) {
	l.call(func(st *termState) {
		for conn := range st.conns {
			i, o := conn.Bytes()
			in, out = in+i, out+o
		}
	})
	return in, out
}

// acceptLoop accepts Followers until the listener closes. It refuses, with an error
// frame that says why, the peers the policy does not admit and those over a connection
// limit, without starting anything for them. When the process is out of descriptors
// it frees its spare one to refuse the next peer, saying so, instead of leaving it in
// the backlog; other errors back off instead of spinning.
func (l *leader) acceptLoop() {
	defer close(l.acceptDone)
	spare, _ := os.Open(os.DevNull) // nil where it cannot be had: then accept backs off
	defer func() {
		if spare != nil {
			_ = spare.Close()
		}
	}()
	self := uint32(os.Geteuid())
	var backoff time.Duration
	for {
		if spare == nil { // given up for a refusal, or never had: try again
			spare, _ = os.Open(os.DevNull)
		}
		nc, peer, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.ctx.Err() != nil || l.calls.isClosed() {
				return
			}
			if isFDExhaustion(err) && spare != nil {
				_ = spare.Close()
				spare = nil
				if nc, peer, aerr := l.ln.Accept(); aerr == nil {
					l.refuse(nc, peer, overLimit("FDHeadroom", l.c.cfg.lim.FDHeadroom, "the leader ran out of descriptors (%v)", err))
					continue
				}
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.c.refused.note(slog.LevelWarn, "accept", ipc.PeerCred{}, fmt.Errorf("accept failed; backing off %v: %w", backoff, err))
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		if err := l.policy.Check(peer, self); err != nil {
			l.c.refused.note(slog.LevelWarn, "unauthorized", peer, err)
			refuseConn(nc, frame.CodeUnauthorized, err)
			continue
		}
		if err := l.adm.admit(peer); err != nil {
			l.refuse(nc, peer, err)
			continue
		}
		l.serveWG.Add(1)
		go l.serve(nc, peer)
	}
}

// refuse turns away a connection over a limit, logging and counting it.
func (l *leader) refuse(nc net.Conn, peer ipc.PeerCred, err error) {
	kind := "limit"
	var le *limitError
	if errors.As(err, &le) {
		kind = le.limit
	}
	l.c.refused.note(slog.LevelWarn, kind, peer, err)
	refuseConn(nc, frame.CodeLimit, err)
}

// noteEnd logs why a Follower's connection ended, when that is news: a peer that broke
// the protocol or a limit is logged and counted as a refusal (rate-limited), so that a
// flood of them cannot flood the log; one that left, or was closed by the handover, is
// not logged at all.
func (l *leader) noteEnd(peer ipc.PeerCred, err error) {
	kind := ""
	switch {
	case err == nil, errors.Is(err, ipc.ErrClosed), errors.Is(err, io.EOF):
		return
	case errors.Is(err, ipc.ErrSlowConsumer):
		kind = "MaxQueued"
	case errors.Is(err, ipc.ErrHeartbeatTimeout):
		kind = "HeartbeatTimeout"
	case errors.Is(err, ipc.ErrFrameTimeout):
		kind = "FrameTimeout"
	case errors.Is(err, frame.ErrTooLarge):
		kind = "too-large"
	case errors.Is(err, frame.ErrProtocol):
		kind = "protocol"
	default:
		kind = "connection" // a reset, a write that failed: a peer can cause it at will
	}
	l.c.refused.note(slog.LevelWarn, kind, peer, err)
}

// housekeep, once a second until the term ends, counts the process's descriptors again
// (see fdGauge) and writes the refusal summaries that are due.
func (l *leader) housekeep() {
	defer close(l.housekeepEnd)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
			l.adm.fds.calibrate()
			l.c.refused.flush()
		}
	}
}

// serve handshakes one admitted Follower and serves it until its connection ends.
func (l *leader) serve(nc net.Conn, peer ipc.PeerCred) {
	defer l.serveWG.Done()
	inHandshake := true
	defer func() { l.adm.leave(peer, inHandshake) }()
	stale := false
	hello, err := ipc.ServerHandshake(nc, time.Now().Add(l.c.cfg.lim.HandshakeTimeout), func(h frame.Hello) (frame.Welcome, *ipc.FrameError) {
		return l.welcome(h, &stale)
	})
	l.adm.handshook(peer)
	inHandshake = false
	if err != nil {
		_ = nc.Close()
		if stale {
			l.c.cfg.Logger.Debug("cluster: follower handshake failed", "peer", peer, "err", err) // expected right after a TCP election
			return
		}
		l.c.refused.note(slog.LevelWarn, "handshake", peer, err)
		return
	}
	if hello.Role == frame.RoleObserver {
		l.serveObserver(nc, peer)
		return
	}
	l.serveFollower(nc, peer, hello)
}

// welcome answers a hello: a welcome, or the error frame that says why not. stale is
// set when the peer's token is stale, which is expected right after a TCP election.
func (l *leader) welcome(h frame.Hello, stale *bool) (frame.Welcome, *ipc.FrameError) {
	if h.Name != l.c.cfg.Name {
		return frame.Welcome{}, &ipc.FrameError{Code: frame.CodeProtocol, Message: fmt.Sprintf("this socket serves cluster %q, not %q", l.c.cfg.Name, h.Name)}
	}
	if err := l.tr.authorize(h.Token); err != nil {
		if errors.Is(err, errStaleToken) {
			// Retryable, as while handing over: the Follower reads the token again.
			*stale = true
			return frame.Welcome{}, &ipc.FrameError{Code: frame.CodeClosed, Message: err.Error()}
		}
		return frame.Welcome{}, &ipc.FrameError{Code: frame.CodeUnauthorized, Message: err.Error()}
	}
	if h.MaxBody < minMaxBody {
		return frame.Welcome{}, &ipc.FrameError{Code: frame.CodeProtocol, Message: fmt.Sprintf("the hello's max body is %d bytes; a member accepts at least %d", h.MaxBody, minMaxBody)}
	}
	if h.Role != "" && h.Role != frame.RoleObserver {
		return frame.Welcome{}, &ipc.FrameError{Code: frame.CodeProtocol, Message: fmt.Sprintf("unknown role %q in hello", h.Role)}
	}
	if h.Identity != l.c.cfg.Identity && h.Role != frame.RoleObserver { // after the token: it tells nothing to a stranger
		return frame.Welcome{}, &ipc.FrameError{Code: frame.CodeIdentity, Message: fmt.Sprintf(
			"the leader (pid %d, term %d) serves Config.Identity %q; this member's is %q", pid(), l.term, l.c.cfg.Identity, h.Identity)}
	}
	if l.calls.isClosed() {
		return frame.Welcome{}, &ipc.FrameError{Code: frame.CodeClosed, Message: "leader is handing over"}
	}
	return frame.Welcome{PID: uint32(pid()), MaxBody: uint32(l.c.cfg.MaxBody), Term: l.term, Name: l.c.cfg.Name, Identity: l.c.cfg.Identity}, nil
}

// serveFollower serves a welcomed Follower until its connection ends.
func (l *leader) serveFollower(nc net.Conn, peer ipc.PeerCred, hello frame.Hello) {
	pc := &peerConn{l: l, hello: hello, at: time.Now(), subs: make(map[subKey]struct{}), regs: make(map[uint64]registration), sem: make(chan struct{}, l.c.cfg.lim.MaxInflight), acked: make(chan struct{}), work: make(chan job)}
	pc.ctx, pc.cancel = context.WithCancel(l.ctx)
	opts := l.c.cfg.peerOptions(l.budget)
	opts.FileHandler = pc.handle
	conn := ipc.NewConn(nc, peer, opts)
	pc.conn = conn
	// Register atomically with respect to shutdown's snapshot. A Follower whose
	// handshake finished as the handover began is not in it: it gets its goodbye here.
	// It may already have sent requests, thinking itself welcome; they are refused as
	// the handover refuses them (closed: try the next Leader), never lost.
	stopping := false
	var drainBy time.Time
	var joined FollowerInfo
	l.call(func(st *termState) {
		if stopping, drainBy = st.stopping, st.drainBy; !stopping {
			st.conns[conn] = pc
			joined = pc.info()
		}
	})
	if stopping {
		conn.Start()
		_ = conn.Send(frame.Header{Kind: frame.KindGoodbye}, nil, nil)
		ctx, cancel := context.WithDeadline(context.Background(), drainBy) // shutdown's
		select {
		case <-pc.acked:
		case <-conn.Done():
		case <-ctx.Done():
		}
		_ = conn.Drain(ctx)
		cancel()
		pc.cancel()
		conn.Close()
		return
	}
	l.c.stats.followers.Add(1) // counted before its first request can be answered
	conn.Start()
	l.event(Event{Type: "follower-joined", Follower: &joined})

	<-conn.Done()
	l.followerLeft(pc)
}

// followerLeft ends what the Leader holds for a Follower whose connection ended: its
// subscriptions, its registrations (see endRegistrations), its place among the
// connections, and reports it.
func (l *leader) followerLeft(pc *peerConn) {
	conn := pc.conn
	l.noteEnd(conn.Peer(), conn.Err())
	pc.cancel()
	pc.endHeld()
	var subs map[subKey]struct{}
	l.call(func(*termState) { subs, pc.subs = pc.subs, nil })
	for k := range subs {
		l.removeSink(k.topic, pc, k.shared)
	}
	pc.endRegistrations()
	conn.Close()
	var left FollowerInfo
	l.c.stats.bytesMu.Lock()
	l.call(func(st *termState) {
		left = pc.info()
		delete(st.conns, conn)
	})
	l.c.stats.endedBytes(left.BytesIn, left.BytesOut)
	l.c.stats.bytesMu.Unlock()
	l.c.stats.followers.Add(-1)
	l.event(Event{Type: "follower-left", Follower: &left, Err: errText(conn.Err())})
}

// shutdown hands leadership over: stop accepting, say goodbye, drain in-flight calls
// (bounded), close the Service, flush and close connections, remove the socket, and
// release the lock last. It returns the time it stopped leading, taken just before the
// lock was released (no later Leader's term can start before it), and Service.Close's
// error.
func (l *leader) shutdown() (time.Time, error) {
	info := l.describe()
	l.event(Event{Type: "leader-stopping", Leader: &info})
	_ = l.ln.Close()
	<-l.acceptDone
	l.calls.close()
	drainBy := time.Now().Add(drainTimeout)
	var peers []*peerConn
	l.call(func(st *termState) {
		st.stopping, st.drainBy = true, drainBy
		for _, pc := range st.conns {
			peers = append(peers, pc)
		}
	})
	for _, pc := range peers {
		_ = pc.conn.Send(frame.Header{Kind: frame.KindGoodbye}, nil, nil)
	}
	touchLock(l.c.cfg.lockPath) // Followers resting between calls read the goodbye now
	// Wait (bounded) for in-flight calls to finish and for every Follower to
	// acknowledge the goodbye: after its ack a Follower sends nothing more, so closing
	// its connection cannot lose a request.
	ctx, cancel := context.WithDeadline(context.Background(), drainBy)
	defer cancel()
	if err := l.calls.wait(ctx); err != nil {
		l.c.cfg.Logger.Warn("cluster: in-flight calls did not finish before handover; cancelling them", "timeout", drainTimeout)
	}
	for _, pc := range peers {
		select {
		case <-pc.acked:
		case <-pc.conn.Done():
		case <-ctx.Done():
		}
	}
	if l.batch != nil {
		l.batch.stop() // before the cancel ends a blocked batch, whose runner would start the next
	}
	l.cancel()
	l.closeTopics()
	closeErr := l.svc.close()
	if closeErr != nil {
		l.c.cfg.Logger.Warn("cluster: Service.Close", "err", errText(closeErr))
		closeErr = fmt.Errorf("cluster %q: Service.Close (term %d): %w", l.c.cfg.Name, l.term, closeErr)
	}
	// The last writes (answers, and refusals of the calls no batch took) get at least
	// lastFlush, however little of the drain's time is left.
	flushBy := drainBy
	if last := time.Now().Add(lastFlush); last.After(flushBy) {
		flushBy = last
	}
	flush, cancelFlush := context.WithDeadline(context.Background(), flushBy)
	defer cancelFlush()
	for _, pc := range peers {
		_ = pc.conn.Drain(flush)
	}
	l.closeObservers()
	l.serveWG.Wait()
	close(l.ownStop)
	<-l.ownDone
	<-l.watchEnd
	<-l.housekeepEnd
	stopped := time.Now()
	l.tr.release()
	return stopped, closeErr
}

// serviceErr maps a Service error to what the caller sees, the same on the Leader and,
// through the error frame, on a Follower: the caller's own deadline is a timeout,
// anything else a RemoteError (see RemoteError for what it unwraps to). Reading err runs
// the application's code (its Error, Is and Unwrap methods), so a panic there is
// recovered like one in the Service.
func (c *Client) serviceErr(ctx context.Context, op, name string, err error) (out error) {
	defer func() {
		if v := recover(); v != nil {
			pe := c.notePanic("the error of Service."+serviceMethod(op), name, v)
			out = &RemoteError{Op: op, Name: name, Message: pe.Error(), errs: []error{ErrServicePanic}}
		}
	}()
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return ctxErr(ctx, op, name)
	}
	re := &RemoteError{Op: op, Name: name, Message: err.Error()}
	if pe, ok := err.(*panicError); ok {
		re.Message = pe.Error() + " (the leader recovered; its log has the stack)"
		re.errs = []error{ErrServicePanic}
	} else {
		re.Codes, re.errs = c.cfg.codesOf(err)
	}
	return re
}

// serviceMethod names the Service method behind an operation.
func serviceMethod(op string) string {
	switch op {
	case "invoke":
		return "Invoke"
	case "subscribe":
		return "Subscribe"
	case "withdraw":
		return "Withdraw"
	}
	return "Publish" // publish, register
}

// The local fast path: the Leader's own calls go straight to the Service.

func (l *leader) invoke(ctx context.Context, method string, req Message, oneway bool) (Message, error) {
	if !l.calls.enter() {
		return Message{}, errNotSent
	}
	if oneway {
		// At most Limits.MaxInflight of them run at once, as for a Follower's
		// connection: past that, InvokeOneway waits for one to end, within ctx.
		select {
		case l.oneways <- struct{}{}:
		case <-ctx.Done():
			l.calls.leave()
			return Message{}, ctxErr(ctx, "invoke-oneway", method)
		}
		// The call outlives InvokeOneway, and the caller may close its Blob and Files
		// when InvokeOneway returns: the Service gets clones, as a Follower's would.
		req, err := own(lend(req))
		if err != nil {
			<-l.oneways
			l.calls.leave()
			return Message{}, fmt.Errorf("cluster: invoke-oneway %q: %w", method, err)
		}
		go func() {
			defer l.calls.leave()
			defer func() { <-l.oneways }()
			defer release(req)
			octx, cancel := context.WithTimeout(l.ctx, l.c.callTimeoutOr(DefaultCallTimeout))
			defer cancel()
			out, err := l.svc.invoke(octx, method, req)
			_ = out.Close()
			if err != nil {
				l.c.cfg.Logger.Warn("cluster: oneway invoke failed", "method", method, "err", errText(err))
			}
		}()
		return Message{}, nil
	}
	defer l.calls.leave()
	var out Message
	var err error
	if l.batch != nil {
		out, err = l.invokeBatched(ctx, method, req)
		if errors.Is(err, errTermOver) { // refused, not run: the next Leader takes it
			return Message{}, err
		}
	} else {
		out, err = l.svc.invoke(ctx, method, lend(req))
	}
	if err != nil {
		return Message{}, l.c.serviceErr(ctx, "invoke", method, err)
	}
	if err := l.c.checkResponse(method, out); err != nil {
		_ = out.Close()
		return Message{}, err
	}
	return out, nil
}

func (l *leader) publish(ctx context.Context, topic string, msg Message) error {
	if !l.calls.enter() {
		return errNotSent
	}
	defer l.calls.leave()
	if err := l.svc.publish(ctx, topic, lend(msg)); err != nil {
		return l.c.serviceErr(ctx, "publish", topic, err)
	}
	return nil
}

func (l *leader) subscribe(ctx context.Context, topic string, shared bool) error {
	if !l.calls.enter() {
		return errNotSent
	}
	defer l.calls.leave()
	return l.addSink(ctx, topic, localSink{l.c}, shared)
}

func (l *leader) unsubscribe(_ context.Context, topic string, shared bool) error {
	l.removeSink(topic, localSink{l.c}, shared)
	return nil
}

func (l *leader) register(ctx context.Context, r *Registration) error {
	if !l.calls.enter() {
		return errNotSent
	}
	defer l.calls.leave()
	if err := l.svc.publish(ctx, r.topic, r.msg); err != nil {
		return l.c.serviceErr(ctx, "register", r.topic, err)
	}
	return nil
}

func (l *leader) withdraw(ctx context.Context, r *Registration) error {
	if !l.svc.withdrawer() {
		return nil
	}
	if !l.calls.enter() {
		return errNotSent
	}
	defer l.calls.leave()
	if err := l.svc.withdraw(ctx, r.topic, r.msg); err != nil {
		return l.c.serviceErr(ctx, "withdraw", r.topic, err)
	}
	return nil
}

// localSink delivers to this process's own subscribers.
type localSink struct{ c *Client }

// A message too large for this member's Config is dropped here as a Follower with the
// same Config drops it on receipt, so that subscribers see the same in every role.
func (s localSink) deliver(topic string, m Message, shared bool) {
	if err := s.c.checkReceived(m, "message on", topic, "the message"); err != nil {
		s.c.cfg.Logger.Warn("cluster: message not delivered", "topic", topic, "err", err)
		s.c.subs.dropped.Add(1)
		return
	}
	s.c.subs.deliver(topic, m, shared)
}

// gate counts calls in progress and refuses new ones once closed.
type gate struct {
	mu     sync.Mutex
	n      int
	closed bool
	zero   chan struct{} // closed when closed && n == 0
}

func (g *gate) init() { g.zero = make(chan struct{}) }

func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.closed && g.n == 0 {
		close(g.zero)
	}
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		if g.n == 0 {
			close(g.zero)
		}
	}
}

func (g *gate) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

func (g *gate) wait(ctx context.Context) error {
	select {
	case <-g.zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

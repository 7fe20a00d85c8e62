package cluster

import (
	"context"
	"fmt"
	"sync"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/ipc"
)

// sink is a subscriber of a topic on the Leader: a Follower connection, or the Leader's
// own process. deliver must not block.
type sink interface {
	deliver(topic string, m Message)
}

// topic is one entry of the Leader's subscription table: the Service's one
// subscription, the latest message, and the sinks it fans out to.
type topic struct {
	name string
	// sub serialises Service.Subscribe and the cancel of this topic. It is never held
	// by emit, so a Service may emit from inside Subscribe.
	sub sync.Mutex

	fan    sync.Mutex // guards everything below
	cancel func()
	active bool // Service.Subscribe succeeded
	dead   bool // removed from the table; emits are ignored
	latest Message
	has    bool
	sinks  map[sink]struct{}
}

// emit is the func given to Service.Subscribe. Holding fan while fanning out keeps the
// per-topic order and makes "replay latest, then live messages" gap- and duplicate-free
// for a sink that joins concurrently.
func (t *topic) emit(m Message) {
	t.fan.Lock()
	defer t.fan.Unlock()
	if t.dead {
		return
	}
	t.latest, t.has = m, true
	for s := range t.sinks {
		s.deliver(t.name, m)
	}
}

// kill cancels the Service subscription at the end of a term.
func (t *topic) kill() {
	t.sub.Lock()
	defer t.sub.Unlock()
	t.fan.Lock()
	cancel := t.cancel
	t.dead, t.cancel = true, nil
	clear(t.sinks)
	t.fan.Unlock()
	if cancel != nil {
		cancel()
	}
}

// addSink subscribes s to name: the first sink makes the one Service subscription, and
// every sink gets the latest message at once.
func (l *leader) addSink(ctx context.Context, name string, s sink) error {
	for {
		l.mu.Lock()
		t := l.topics[name]
		if t == nil {
			t = &topic{name: name, sinks: make(map[sink]struct{})}
			l.topics[name] = t
		}
		l.mu.Unlock()

		t.sub.Lock()
		t.fan.Lock()
		dead, active := t.dead, t.active
		t.fan.Unlock()
		if dead { // removed while we waited: look it up again
			t.sub.Unlock()
			continue
		}
		if !active {
			cancel, err := l.svc.Subscribe(ctx, name, t.emit)
			if err != nil {
				t.fan.Lock()
				gone := len(t.sinks) == 0
				if gone {
					t.dead = true
				}
				t.fan.Unlock()
				if gone {
					l.dropTopic(t)
				}
				t.sub.Unlock()
				return serviceErr(ctx, "subscribe", name, err)
			}
			t.fan.Lock()
			t.cancel, t.active = cancel, true
			t.fan.Unlock()
		}
		t.fan.Lock()
		if _, dup := t.sinks[s]; !dup {
			t.sinks[s] = struct{}{}
			if t.has {
				s.deliver(name, t.latest)
			}
		}
		t.fan.Unlock()
		t.sub.Unlock()
		return nil
	}
}

// removeSink unsubscribes s from name; the last sink cancels the Service subscription
// and forgets the latest message.
func (l *leader) removeSink(name string, s sink) {
	l.mu.Lock()
	t := l.topics[name]
	l.mu.Unlock()
	if t == nil {
		return
	}
	t.sub.Lock()
	defer t.sub.Unlock()
	t.fan.Lock()
	delete(t.sinks, s)
	last := len(t.sinks) == 0 && !t.dead
	var cancel func()
	if last {
		cancel = t.cancel
		t.dead, t.cancel = true, nil
		t.latest, t.has = Message{}, false
	}
	t.fan.Unlock()
	if last {
		if cancel != nil {
			cancel()
		}
		l.dropTopic(t)
	}
}

func (l *leader) dropTopic(t *topic) {
	l.mu.Lock()
	if l.topics[t.name] == t {
		delete(l.topics, t.name)
	}
	l.mu.Unlock()
}

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

	mu     sync.Mutex
	topics map[string]struct{} // nil once the connection ended
}

// deliver queues a message frame; a Follower that does not keep up is dropped by the
// connection's queue bound, then reconnects and gets the latest message again.
func (pc *peerConn) deliver(topic string, m Message) {
	if len(m.Data) > int(pc.hello.MaxBody) {
		pc.l.c.cfg.Logger.Warn("cluster: message larger than the follower accepts; not delivered", "topic", topic, "size", len(m.Data), "limit", pc.hello.MaxBody)
		return
	}
	_ = pc.conn.Send(frame.Header{Kind: frame.KindMessage}, []byte(topic), m.Data)
}

// handle runs on the reader goroutine. Requests run on goroutines of their own; at most
// maxInflightPerConn at once, after which reading this connection waits.
func (pc *peerConn) handle(conn *ipc.Conn, f frame.Frame) {
	switch f.Kind {
	case frame.KindInvoke, frame.KindOneway, frame.KindPublish, frame.KindSubscribe, frame.KindUnsubscribe:
	case frame.KindGoodbye: // the Follower acknowledges our goodbye: nothing follows
		pc.ackOnce.Do(func() { close(pc.acked) })
		return
	default:
		conn.Abort(fmt.Errorf("%w: unexpected %s frame from a follower", frame.ErrProtocol, f.Kind))
		return
	}
	if !pc.l.calls.enter() {
		if f.Kind != frame.KindOneway {
			_ = conn.ReplyError(f.ID, frame.CodeClosed, "leader is handing over; retry on the next leader")
		}
		return
	}
	select {
	case pc.sem <- struct{}{}:
	case <-conn.Done():
		pc.l.calls.leave()
		return
	}
	go pc.exec(f)
}

func (pc *peerConn) exec(f frame.Frame) {
	defer func() {
		<-pc.sem
		pc.l.calls.leave()
	}()
	ctx := pc.ctx
	if f.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, msDuration(f.Timeout))
		defer cancel()
	}
	l, name := pc.l, string(f.Meta)
	var err error
	switch f.Kind {
	case frame.KindInvoke, frame.KindOneway:
		var out Message
		out, err = l.svc.Invoke(ctx, name, Message{Data: f.Body})
		if f.Kind == frame.KindOneway {
			if err != nil {
				l.c.cfg.Logger.Warn("cluster: oneway invoke failed", "method", name, "peer", pc.conn.Peer(), "err", err)
			}
			return
		}
		if err == nil {
			if len(out.Data) > int(pc.hello.MaxBody) {
				_ = pc.conn.ReplyError(f.ID, frame.CodeTooLarge, fmt.Sprintf("response is %d bytes, the follower accepts %d", len(out.Data), pc.hello.MaxBody))
				return
			}
			_ = pc.conn.Reply(f.ID, out.Data)
			return
		}
		err = serviceErr(ctx, "invoke", name, err)
	case frame.KindPublish:
		if err = l.svc.Publish(ctx, name, Message{Data: f.Body}); err != nil {
			err = serviceErr(ctx, "publish", name, err)
		}
	case frame.KindSubscribe:
		pc.mu.Lock()
		ended := pc.topics == nil
		pc.mu.Unlock()
		if ended {
			return
		}
		if err = l.addSink(ctx, name, pc); err == nil {
			pc.mu.Lock()
			if pc.topics != nil {
				pc.topics[name] = struct{}{}
				pc.mu.Unlock()
			} else { // the connection ended meanwhile: undo
				pc.mu.Unlock()
				l.removeSink(name, pc)
			}
		}
	case frame.KindUnsubscribe:
		pc.mu.Lock()
		if pc.topics != nil {
			delete(pc.topics, name)
		}
		pc.mu.Unlock()
		l.removeSink(name, pc)
	}
	pc.reply(f.ID, err)
}

// reply answers a request with an empty response or the error's code and message.
func (pc *peerConn) reply(id uint64, err error) {
	if err == nil {
		_ = pc.conn.Reply(id, nil)
		return
	}
	code := frame.CodeRemote
	msg := err.Error()
	if re, ok := err.(*RemoteError); ok {
		msg = re.Message
	} else if isTimeout(err) {
		code = frame.CodeTimeout
	}
	_ = pc.conn.ReplyError(id, code, msg)
}

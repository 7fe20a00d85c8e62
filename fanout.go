package cluster

import (
	"log/slog"
	"slices"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// sink is a subscriber of a topic on the Leader: a Follower connection, or the Leader's
// own process. deliver must not block; shared says the message is for one of the
// sink's shared subscribers rather than all of its broadcast ones.
type sink interface {
	deliver(topic string, m Message, shared bool)
}

// fanout is the table one topic fans out with, on the Leader (topic, whose subscribers
// are sinks) and in every process (localTopic, whose subscribers are Subscriptions):
// every broadcast subscriber gets every message, one shared subscriber (in turn) each
// message, and a broadcast subscriber that joins gets the latest message at once. Its
// owner guards it and delivers while holding that guard, which keeps the order of the
// messages and makes "the latest message, then the next ones" free of gaps and
// duplicates for a subscriber that joins while messages flow.
type fanout[S comparable] struct {
	broadcast []S // in subscription order
	shared    []S // in subscription order
	next      int // the shared subscriber the next message goes to
	latest    Message
	has       bool
}

func (f *fanout[S]) empty() bool { return len(f.broadcast) == 0 && len(f.shared) == 0 }

// add subscribes s, unless it is already; a broadcast subscriber is then given the
// latest message, if any, through replay. It reports whether s was added.
func (f *fanout[S]) add(s S, shared bool, replay func(S, Message)) bool {
	if shared {
		if slices.Contains(f.shared, s) {
			return false
		}
		f.shared = append(f.shared, s)
		return true
	}
	if slices.Contains(f.broadcast, s) {
		return false
	}
	f.broadcast = append(f.broadcast, s)
	if f.has {
		replay(s, f.latest)
	}
	return true
}

// remove unsubscribes s; the other shared subscribers keep their turns.
func (f *fanout[S]) remove(s S, shared bool) {
	if !shared {
		if i := slices.Index(f.broadcast, s); i >= 0 {
			f.broadcast = slices.Delete(f.broadcast, i, i+1)
		}
		return
	}
	if i := slices.Index(f.shared, s); i >= 0 {
		f.shared = slices.Delete(f.shared, i, i+1)
		if f.next > i {
			f.next--
		}
	}
}

// keep makes m the latest message: the table holds m's resources (retain) until a later
// message or reset replaces it.
func (f *fanout[S]) keep(m Message) {
	retain(m)
	release(f.latest)
	f.latest, f.has = m, true
}

// turn returns the shared subscriber whose turn it is, and moves the turn on; ok is
// false when there is none.
func (f *fanout[S]) turn() (s S, ok bool) {
	n := len(f.shared)
	if n == 0 {
		return s, false
	}
	f.next %= n
	s = f.shared[f.next]
	f.next++
	return s, true
}

// forget drops the latest message.
func (f *fanout[S]) forget() {
	release(f.latest)
	f.latest, f.has = Message{}, false
}

// reset drops every subscriber and the latest message.
func (f *fanout[S]) reset() {
	f.forget()
	f.broadcast, f.shared, f.next = nil, nil, 0
}

// emit is the func given to Service.Subscribe. It runs on the Service's goroutine, not
// on the term's owner. Holding fan while fanning out keeps the per-topic order and,
// since the owner adds a sink and replays the latest message to it under fan too, makes
// "replay latest, then live messages" gap- and duplicate-free for a sink that joins
// concurrently.
//
// emit takes m's Blob and Files: they are closed when the latest message no longer
// needs them and no local subscriber holds them (peers get duplicates at once).
func (t *topic) emit(m Message) {
	m, err := own(m)
	if err != nil {
		t.log.Warn("cluster: emitted message not delivered", "topic", t.name, "err", err)
		return
	}
	defer release(m)
	t.fan.Lock()
	defer t.fan.Unlock()
	if t.dead {
		return
	}
	t.out.keep(m)
	t.latestAt = time.Now()
	for _, s := range t.out.broadcast {
		s.deliver(t.name, m, false)
	}
	if s, ok := t.out.turn(); ok {
		s.deliver(t.name, m, true)
	}
}

// deliver queues a message frame; a Follower that does not keep up is dropped by the
// connection's queue bound, then reconnects and gets the latest message again.
func (pc *peerConn) deliver(topic string, m Message, shared bool) {
	w, err := encodeMessage(pc.conn, m, int(pc.hello.MaxBody), "message on", topic, "the message")
	if err != nil {
		// A peer sets its own MaxBody: logged like a refusal, so that it cannot make
		// the Leader write a line per message.
		pc.l.c.refused.note(slog.LevelWarn, "undelivered", pc.conn.Peer(), err)
		return
	}
	h := frame.Header{Kind: frame.KindMessage, Flags: w.flags}
	if shared {
		h.Flags |= frame.FlagShared
	}
	_ = pc.conn.SendParts(h, []byte(topic), w.body, w.tail, w.files)
}

package cluster

import (
	"log/slog"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// sink is a subscriber of a topic on the Leader: a Follower connection, or the Leader's
// own process. deliver must not block; shared says the message is for one of the
// sink's shared subscribers rather than all of its broadcast ones.
type sink interface {
	deliver(topic string, m Message, shared bool)
}

// emit is the func given to Service.Subscribe. Holding fan while fanning out keeps the
// per-topic order and makes "replay latest, then live messages" gap- and duplicate-free
// for a sink that joins concurrently.
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
	retain(m)
	release(t.latest)
	t.latest, t.has, t.latestAt = m, true, time.Now()
	for s := range t.sinks {
		s.deliver(t.name, m, false)
	}
	if n := len(t.shared); n > 0 {
		t.next %= n
		t.shared[t.next].deliver(t.name, m, true)
		t.next++
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

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/ipc"
)

// Observers are peers that only look: status tools (Inspect, Watch, clusterctl). They
// say so in their hello (frame.RoleObserver) and are admitted like Followers (peer
// policy, token, Limits), but they are not Followers: they are not counted as such,
// never get a goodbye, and may send only status and watch requests. The Leader answers
// a status request with its Status as JSON, and after a watch request sends the
// observer an event frame for each Follower that joins or leaves and when it begins to
// hand over. Members may send status requests too (Client.LeaderStatus).

// Event is a change a Leader reports to its watchers (see Watch).
type Event struct {
	// Type is what happened: "leader" (a Leader answers: Leader is set),
	// "follower-joined" and "follower-left" (Follower is set), "leader-stopping" (the
	// Leader began to hand over), "no-leader" (the watcher lost its Leader, or found
	// none: Err says why).
	Type     string        `json:"type"`
	At       time.Time     `json:"at"`
	Name     string        `json:"name"` // the cluster
	Leader   *LeaderInfo   `json:"leader,omitempty"`
	Follower *FollowerInfo `json:"follower,omitempty"`
	Err      string        `json:"error,omitempty"`
}

// serveObserver serves an observer's connection until it ends.
func (l *leader) serveObserver(nc net.Conn, peer ipc.PeerCred) {
	opts := l.c.cfg.peerOptions(l.budget)
	opts.Handler = l.observerFrame
	conn := ipc.NewConn(nc, peer, opts)
	stopping := false
	l.call(func(st *termState) {
		if stopping = st.stopping; !stopping {
			st.observers[conn] = false
		}
	})
	if stopping {
		_ = nc.Close()
		return
	}
	conn.Start()
	<-conn.Done()
	l.noteEnd(peer, conn.Err())
	conn.Close()
	l.call(func(st *termState) { delete(st.observers, conn) })
}

// observerFrame handles a frame from an observer, on its connection's reader.
func (l *leader) observerFrame(conn *ipc.Conn, f frame.Frame) {
	switch f.Kind {
	case frame.KindStatus:
		l.answerStatus(conn, f, observerMaxBody)
	case frame.KindWatch:
		l.call(func(st *termState) {
			if _, ok := st.observers[conn]; ok {
				st.observers[conn] = true
			}
		})
		_ = conn.Reply(f.ID, nil)
	default:
		conn.Fail(frame.CodeProtocol, fmt.Errorf("%w: an observer sent a %s frame; it may send status and watch only", frame.ErrProtocol, f.Kind))
	}
}

// statusEvery is how often a Leader makes its status document at most: requests that
// come sooner get the last one. Making it walks every connection and topic, so a
// peer that asks again and again costs the Leader no more than this.
const statusEvery = 100 * time.Millisecond

// answerStatus answers a status request with the Leader's Status (at most statusEvery
// old), or with too-large when it would not fit the peer's MaxBody.
func (l *leader) answerStatus(conn *ipc.Conn, f frame.Frame, maxBody uint32) {
	b := l.statusDoc()
	if uint32(len(b)) > maxBody {
		_ = conn.ReplyError(f.ID, frame.CodeTooLarge, fmt.Sprintf(
			"cluster: status: the document is %d bytes, over this member's MaxBody of %d (Inspect, or clusterctl, accept up to %d)", len(b), maxBody, observerMaxBody))
		return
	}
	_ = conn.Reply(f.ID, b)
}

// statusDoc returns the status document, made anew when the last is statusEvery old.
func (l *leader) statusDoc() []byte {
	var doc []byte
	if !l.call(func(st *termState) {
		if st.statusJSON == nil || time.Since(st.statusAt) >= statusEvery {
			b, err := json.Marshal(l.reportOn(st))
			if err != nil { // a Status always marshals; say so if it ever does not
				b = []byte(fmt.Sprintf(`{"name":%q,"error":%q}`, l.c.cfg.Name, err))
			}
			st.statusJSON, st.statusAt = b, time.Now()
		}
		doc = st.statusJSON
	}) {
		doc, _ = json.Marshal(l.reportOn(nil))
	}
	return doc
}

// event tells every watching observer what happened. It never blocks: an observer
// that does not read is dropped by its queue's bound, like a Follower.
func (l *leader) event(e Event) {
	e.At, e.Name = time.Now(), l.c.cfg.Name
	var watchers []*ipc.Conn
	l.call(func(st *termState) {
		for conn, watching := range st.observers {
			if watching {
				watchers = append(watchers, conn)
			}
		}
	})
	if len(watchers) == 0 {
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	for _, conn := range watchers {
		_ = conn.Send(frame.Header{Kind: frame.KindEvent}, []byte(e.Type), b)
	}
}

// closeObservers ends every observer's connection (the term is over).
func (l *leader) closeObservers() {
	var conns []*ipc.Conn
	l.call(func(st *termState) {
		for conn := range st.observers {
			conns = append(conns, conn)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	for _, conn := range conns {
		_ = conn.Drain(ctx) // the last events, then closed
	}
}

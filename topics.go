package cluster

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// subKey names one of a process's two subscriptions of a topic: broadcast (every
// subscriber gets every message) or shared (each message goes to one subscriber).
type subKey struct {
	topic  string
	shared bool
}

// topic is one entry of the Leader's subscription table: the Service's one
// subscription, the latest message, and the sinks it fans out to: every broadcast sink
// gets every message, and one shared sink (in turn) gets each message.
type topic struct {
	name string
	log  *slog.Logger
	// sub serialises Service.Subscribe and the cancel of this topic. It is never held
	// by emit, so a Service may emit from inside Subscribe.
	sub sync.Mutex

	fan      sync.Mutex // guards everything below
	cancel   func()
	active   bool // Service.Subscribe succeeded
	dead     bool // removed from the table; emits are ignored
	latest   Message
	has      bool
	latestAt time.Time         // when latest arrived
	sinks    map[sink]struct{} // broadcast
	shared   []sink            // shared, in subscription order
	next     int               // the shared sink the next message goes to
}

func (t *topic) empty() bool { return len(t.sinks) == 0 && len(t.shared) == 0 }

// kill cancels the Service subscription at the end of a term.
func (t *topic) kill() {
	t.sub.Lock()
	defer t.sub.Unlock()
	t.fan.Lock()
	cancel := t.cancel
	t.dead, t.cancel = true, nil
	clear(t.sinks)
	t.shared = nil
	release(t.latest)
	t.latest, t.has = Message{}, false
	t.fan.Unlock()
	if cancel != nil {
		cancel()
	}
}

// addSink subscribes s to name: the first sink makes the one Service subscription, and
// every broadcast sink gets the latest message at once. A shared sink gets no replay:
// the latest message already went to one shared subscriber, and work is done once.
func (l *leader) addSink(ctx context.Context, name string, s sink, shared bool) error {
	for {
		l.mu.Lock()
		t := l.topics[name]
		if t == nil {
			t = &topic{name: name, log: l.c.cfg.Logger, sinks: make(map[sink]struct{})}
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
			cancel, err := l.svc.subscribe(ctx, name, t.emit)
			if err != nil {
				t.fan.Lock()
				gone := t.empty()
				if gone {
					t.dead = true
				}
				t.fan.Unlock()
				if gone {
					l.dropTopic(t)
				}
				t.sub.Unlock()
				return l.c.serviceErr(ctx, "subscribe", name, err)
			}
			t.fan.Lock()
			t.cancel, t.active = cancel, true
			t.fan.Unlock()
		}
		t.fan.Lock()
		switch {
		case shared:
			if !slices.Contains(t.shared, s) {
				t.shared = append(t.shared, s)
			}
		default:
			if _, dup := t.sinks[s]; !dup {
				t.sinks[s] = struct{}{}
				if t.has {
					s.deliver(name, t.latest, false)
				}
			}
		}
		t.fan.Unlock()
		t.sub.Unlock()
		return nil
	}
}

// removeSink unsubscribes s from name; the last sink cancels the Service subscription
// and forgets the latest message.
func (l *leader) removeSink(name string, s sink, shared bool) {
	l.mu.Lock()
	t := l.topics[name]
	l.mu.Unlock()
	if t == nil {
		return
	}
	t.sub.Lock()
	defer t.sub.Unlock()
	t.fan.Lock()
	if shared {
		if i := slices.Index(t.shared, s); i >= 0 {
			t.shared = slices.Delete(t.shared, i, i+1)
			if t.next > i {
				t.next-- // keep the turn order of the others
			}
		}
	} else {
		delete(t.sinks, s)
	}
	last := t.empty() && !t.dead
	var cancel func()
	if last {
		cancel = t.cancel
		t.dead, t.cancel = true, nil
		release(t.latest)
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

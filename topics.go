package cluster

import (
	"context"
	"log/slog"
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
	out      fanout[sink]
	latestAt time.Time // when out's latest message arrived
}

func (t *topic) empty() bool { return t.out.empty() }

// kill cancels the Service subscription at the end of a term.
func (t *topic) kill() {
	t.sub.Lock()
	defer t.sub.Unlock()
	t.fan.Lock()
	cancel := t.cancel
	t.dead, t.cancel = true, nil
	t.out.reset()
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
			t = &topic{name: name, log: l.c.cfg.Logger}
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
		t.out.add(s, shared, func(s sink, latest Message) { s.deliver(name, latest, false) })
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
	t.out.remove(s, shared)
	last := t.empty() && !t.dead
	var cancel func()
	if last {
		cancel = t.cancel
		t.dead, t.cancel = true, nil
		t.out.forget()
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

package cluster

import (
	"context"
	"log/slog"
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
// gets every message, and one shared sink (in turn) gets each message. The table
// (termState.topics) and the fields up to fan belong to the term's owner.
type topic struct {
	name string
	log  *slog.Logger

	cancel func() // the Service subscription's, once active
	active bool   // Service.Subscribe succeeded
	// busy is not nil while Service.Subscribe or the cancel function runs (on the
	// goroutine that asked for it), and is closed when its outcome is in: others that
	// want the topic meanwhile wait for it, then look again.
	busy chan struct{}

	// fan is held by emit while it fans out, and by the owner while it changes the
	// sinks: see leader.go for what may be taken under it. It is never held while the
	// Service runs, so a Service may emit from inside Subscribe.
	fan      rankedMutex[topicFanRank]
	dead     bool // removed from the table; emits are ignored
	out      fanout[sink]
	latestAt time.Time // when out's latest message arrived
}

// add subscribes s, a broadcast sink getting the latest message at once. Owner only.
func (t *topic) add(s sink, shared bool) {
	t.fan.Lock()
	defer t.fan.Unlock()
	t.out.add(s, shared, func(s sink, latest Message) { s.deliver(t.name, latest, false) })
}

// remove unsubscribes s, and reports whether t has no sink left. Owner only.
func (t *topic) remove(s sink, shared bool) (empty bool) {
	t.fan.Lock()
	defer t.fan.Unlock()
	t.out.remove(s, shared)
	return t.out.empty()
}

// kill ends t's fan-out: later emits are ignored. Owner only.
func (t *topic) kill() {
	t.fan.Lock()
	defer t.fan.Unlock()
	t.dead = true
	t.out.reset()
}

// addSink subscribes s to name: the first sink makes the one Service subscription, and
// every broadcast sink gets the latest message at once. A shared sink gets no replay:
// the latest message already went to one shared subscriber, and work is done once.
// Service.Subscribe runs on the calling goroutine; others subscribing to the topic
// meanwhile wait for it, within their ctx.
func (l *leader) addSink(ctx context.Context, name string, s sink, shared bool) error {
	for {
		var t *topic
		var wait chan struct{}
		added := false
		l.call(func(st *termState) {
			if st.ended {
				return
			}
			t = st.topics[name]
			if t == nil {
				t = &topic{name: name, log: l.c.cfg.Logger}
				st.topics[name] = t
			}
			switch {
			case t.busy != nil:
				wait = t.busy
			case t.active:
				t.add(s, shared)
				added = true
			default:
				t.busy = make(chan struct{})
			}
		})
		switch {
		case t == nil:
			return errTermOver
		case added:
			return nil
		case wait != nil:
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return ctxErr(ctx, "subscribe", name)
			}
		}
		return l.subscribeService(ctx, t, s, shared)
	}
}

// subscribeService makes t's one Service subscription, on the calling goroutine, with
// s its first sink. t is busy.
func (l *leader) subscribeService(ctx context.Context, t *topic, s sink, shared bool) error {
	cancel, err := l.svc.subscribe(ctx, t.name, t.emit)
	kept := false
	l.call(func(st *termState) {
		if err == nil && !st.ended {
			t.cancel, t.active, kept = cancel, true, true
			t.add(s, shared)
			return
		}
		if st.topics[t.name] == t {
			delete(st.topics, t.name)
		}
		t.kill()
	})
	if err == nil && !kept && cancel != nil {
		cancel() // the term ended meanwhile
	}
	l.settle(t)
	switch {
	case err != nil:
		return l.c.serviceErr(ctx, "subscribe", t.name, err)
	case !kept:
		return errTermOver
	}
	return nil
}

// settle ends t's busy spell: those waiting for it look again.
func (l *leader) settle(t *topic) {
	l.call(func(*termState) {
		close(t.busy)
		t.busy = nil
	})
}

// removeSink unsubscribes s from name; the last sink cancels the Service subscription
// (on the calling goroutine) and forgets the latest message. It waits for a
// Service.Subscribe or cancel function of the topic that is running to return.
func (l *leader) removeSink(name string, s sink, shared bool) {
	for {
		var t *topic
		var wait chan struct{}
		var cancel func()
		last := false
		l.call(func(st *termState) {
			t = st.topics[name]
			switch {
			case t == nil:
			case t.busy != nil:
				wait = t.busy
			default:
				if last = t.remove(s, shared); last {
					t.kill() // an emit in between reached no sink; later ones are ignored
					cancel, t.cancel, t.active = t.cancel, nil, false
					t.busy = make(chan struct{})
				}
			}
		})
		if wait != nil {
			<-wait
			continue
		}
		if !last {
			return
		}
		if cancel != nil {
			cancel()
		}
		l.call(func(st *termState) {
			if st.topics[name] == t {
				delete(st.topics, name)
			}
			close(t.busy)
			t.busy = nil
		})
		return
	}
}

// closeTopics ends the Service's subscriptions at the end of the term: it cancels
// those that are active and waits for a Service.Subscribe or cancel function that is
// running to return (it cancels what such a Subscribe made).
func (l *leader) closeTopics() {
	var cancels []func()
	var busy []chan struct{}
	l.call(func(st *termState) {
		st.ended = true
		for _, t := range st.topics {
			if t.busy != nil {
				busy = append(busy, t.busy)
			} else if t.cancel != nil {
				cancels = append(cancels, t.cancel)
			}
			t.cancel, t.active = nil, false
			t.kill()
		}
		st.topics = make(map[string]*topic)
	})
	for _, cancel := range cancels {
		cancel()
	}
	for _, b := range busy {
		<-b
	}
}

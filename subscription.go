package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Subscription is one callback subscribed to a topic. Its callback runs on a goroutine
// of its own, one message at a time, in the order the Leader emitted them. If the
// callback falls more than Config.SubscriptionBuffer messages behind, the oldest queued
// message is dropped (the newest always survives; Stats.Dropped counts the losses): a
// slow subscriber never stalls the Leader or the other subscribers.
type Subscription struct {
	c     *Client
	topic string
	fn    func(Message)

	mu      sync.Mutex
	queue   []Message // ring buffer
	head, n int
	closed  bool
	wake    chan struct{}
	done    chan struct{} // closed when the dispatcher has exited

	closeOnce sync.Once
	closeErr  error
}

// Topic returns the subscribed topic.
func (s *Subscription) Topic() string { return s.topic }

// Close unsubscribes. The callback is not called again once Close returns, except that
// an invocation already running finishes. When this was the last subscriber of the
// topic in this process, the Leader is told, and when it was the last on the host the
// Leader cancels the Service's subscription. Close is idempotent and safe to call from
// the callback itself.
func (s *Subscription) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		ctx, cancel := s.c.callContext(context.Background())
		defer cancel()
		s.closeErr = s.c.reg.remove(ctx, s)
	})
	return s.closeErr
}

func newSubscription(c *Client, topic string, fn func(Message), size int) *Subscription {
	s := &Subscription{c: c, topic: topic, fn: fn, queue: make([]Message, size), wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.subsWG.Add(1)
	go s.dispatch()
	return s
}

// push queues m without blocking; it reports whether an old message was dropped.
func (s *Subscription) push(m Message) (dropped bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	if s.n == len(s.queue) {
		s.queue[s.head] = Message{}
		s.head = (s.head + 1) % len(s.queue)
		s.n--
		dropped = true
	}
	s.queue[(s.head+s.n)%len(s.queue)] = m
	s.n++
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return dropped
}

func (s *Subscription) stop() {
	s.mu.Lock()
	s.closed = true
	clear(s.queue)
	s.n = 0
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Subscription) dispatch() {
	defer s.c.subsWG.Done()
	defer close(s.done)
	for range s.wake {
		for {
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				return
			}
			if s.n == 0 {
				s.mu.Unlock()
				break
			}
			m := s.queue[s.head]
			s.queue[s.head] = Message{}
			s.head = (s.head + 1) % len(s.queue)
			s.n--
			s.mu.Unlock()
			s.fn(m)
		}
	}
}

// registry is the process's table of local subscriptions: one entry per topic, however
// many callbacks, so the Leader sees one subscription per topic per process.
type registry struct {
	c       *Client
	mu      sync.Mutex
	topics  map[string]*localTopic
	dropped atomic.Uint64
}

type localTopic struct {
	name string
	subs map[*Subscription]struct{} // guarded by registry.mu
	// latest is the last message seen on the topic, replayed to late local subscribers.
	latest    Message
	hasLatest bool

	opMu     sync.Mutex // serialises subscribe/unsubscribe of this topic on the backend
	activeOn backend    // the backend this topic is subscribed on; guarded by opMu
}

// add registers s and replays the topic's latest message to it.
func (r *registry) add(s *Subscription) *localTopic {
	r.mu.Lock()
	defer r.mu.Unlock()
	lt := r.topics[s.topic]
	if lt == nil {
		lt = &localTopic{name: s.topic, subs: make(map[*Subscription]struct{})}
		r.topics[s.topic] = lt
	}
	lt.subs[s] = struct{}{}
	if lt.hasLatest {
		s.push(lt.latest)
	}
	return lt
}

// deliver fans m out to every local subscriber of topic without blocking.
func (r *registry) deliver(topic string, m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lt := r.topics[topic]
	if lt == nil {
		return
	}
	lt.latest, lt.hasLatest = m, true
	for s := range lt.subs {
		if s.push(m) {
			r.dropped.Add(1)
		}
	}
}

// ensure makes sure topic is subscribed on b (once per backend).
func (r *registry) ensure(ctx context.Context, lt *localTopic, b backend) error {
	lt.opMu.Lock()
	defer lt.opMu.Unlock()
	r.mu.Lock()
	empty := len(lt.subs) == 0
	r.mu.Unlock()
	if empty || lt.activeOn == b {
		return nil
	}
	if err := b.subscribe(ctx, lt.name); err != nil {
		return err
	}
	lt.activeOn = b
	return nil
}

// remove unregisters s; the last local subscriber of a topic unsubscribes it upstream.
func (r *registry) remove(ctx context.Context, s *Subscription) error {
	r.mu.Lock()
	lt := r.topics[s.topic]
	if lt == nil {
		r.mu.Unlock()
		return nil
	}
	delete(lt.subs, s)
	empty := len(lt.subs) == 0
	r.mu.Unlock()
	if !empty {
		return nil
	}
	lt.opMu.Lock()
	defer lt.opMu.Unlock()
	var err error
	r.mu.Lock()
	empty = len(lt.subs) == 0
	r.mu.Unlock()
	if empty && lt.activeOn != nil {
		b := lt.activeOn
		lt.activeOn = nil
		if b == r.c.currentBackend() {
			err = b.unsubscribe(ctx, lt.name)
			// A lost Leader took its subscription table with it, and the next Leader
			// never hears of this topic: nothing is left to undo.
			if errors.Is(err, errNotSent) || errors.Is(err, ErrLeaderLost) || errors.Is(err, ErrClosed) {
				err = nil
			}
		}
	}
	r.mu.Lock()
	if len(lt.subs) == 0 && r.topics[lt.name] == lt {
		delete(r.topics, lt.name)
	}
	r.mu.Unlock()
	return err
}

// snapshot returns the topics that have subscribers.
func (r *registry) snapshot() []*localTopic {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*localTopic, 0, len(r.topics))
	for _, lt := range r.topics {
		if len(lt.subs) > 0 {
			out = append(out, lt)
		}
	}
	return out
}

func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, lt := range r.topics {
		n += len(lt.subs)
	}
	return n
}

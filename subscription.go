package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Subscription is one callback subscribed to a topic. Its callback runs on a goroutine
// of its own, one message at a time, in the order the Leader emitted them. If the
// callback falls more than Config.SubscriptionBuffer messages behind, the oldest queued
// message is dropped (the newest always survives; Stats.Dropped counts the losses): a
// slow subscriber never stalls the Leader or the other subscribers. A panic in the
// callback is recovered, logged at ERROR with its stack and counted (Stats.Panics), and
// the next message is delivered: the callback runs on the library's goroutine, and a
// message that crashed it would crash every process that receives it. The callback may
// close its Subscription or the Client.
type Subscription struct {
	c      *Client
	topic  string
	shared bool
	fn     func(Message)

	first    chan struct{} // closed when the first message arrived
	firstMsg Message       // written once before first is closed
	gotFirst bool          // guarded by mu
	stopped  chan struct{} // closed by stop

	mu      rankedMutex[subscriptionRank]
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

// IsShared reports whether this is a shared subscription (made with the Shared option).
func (s *Subscription) IsShared() bool { return s.shared }

// First returns the first message this subscription received (for a broadcast
// subscription, usually the topic's latest value, replayed at once), waiting for it
// until ctx ends (Config.CallTimeout applies when ctx has no deadline). On timeout it
// returns an error matching ErrTimeout and the subscription stays: Close it if the
// caller no longer wants it. The
// callback is called with the same message as usual; First only reports it.
func (s *Subscription) First(ctx context.Context) (Message, error) {
	select { // a message that is already here wins over an expired ctx
	case <-s.first:
		return s.firstMsg, nil
	default:
	}
	ctx, cancel := s.c.callContext(ctx)
	defer cancel()
	select {
	case <-s.first:
		return s.firstMsg, nil
	case <-s.stopped:
		return Message{}, fmt.Errorf("first message of %q: subscription closed: %w", s.topic, ErrClosed)
	case <-ctx.Done():
		return Message{}, ctxErr(ctx, "first message of", s.topic)
	}
}

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
		s.closeErr = s.c.subs.remove(ctx, s)
	})
	return s.closeErr
}

func newSubscription(c *Client, topic string, shared bool, fn func(Message), size int) *Subscription {
	s := &Subscription{
		c: c, topic: topic, shared: shared, fn: fn, queue: make([]Message, size),
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		first: make(chan struct{}), stopped: make(chan struct{}),
	}
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
	if !s.gotFirst {
		retain(m) // First's hold, released by stop
		s.gotFirst, s.firstMsg = true, m
		close(s.first)
	}
	retain(m) // the queue's hold, released once the callback returns or m is dropped
	if s.n == len(s.queue) {
		release(s.queue[s.head])
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
	var first Message
	if !s.closed {
		close(s.stopped)
		first = s.firstMsg // First's hold ends with the subscription
	}
	s.closed = true
	for i := 0; i < s.n; i++ {
		release(s.queue[(s.head+i)%len(s.queue)])
	}
	clear(s.queue)
	s.n = 0
	s.mu.Unlock()
	release(first)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// call runs the callback with m (a panic in it is recovered: see usercode.go), then
// drops the queue's hold on m's resources.
func (s *Subscription) call(m Message) {
	defer release(m)
	s.c.callback(s.topic, s.fn, m)
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
			s.call(m)
		}
	}
}

// localSubs is the process's table of local subscriptions: one entry per topic and
// mode (broadcast or shared), however many callbacks, so the Leader sees at most one
// subscription of each per process.
type localSubs struct {
	c       *Client
	mu      rankedMutex[localSubsRank]
	topics  map[subKey]*localTopic
	dropped atomic.Uint64
}

type localTopic struct {
	key subKey
	// out holds the topic's subscribers (all broadcast or all shared, as key says) and
	// the last broadcast message seen on it, replayed to late local subscribers.
	// Guarded by localSubs.mu.
	out fanout[*Subscription]

	opMu     sync.Mutex // serialises subscribe/unsubscribe of this topic on the backend
	activeOn backend    // the backend this topic is subscribed on; guarded by opMu
}

// add registers s and replays the topic's latest message to a broadcast subscriber.
func (r *localSubs) add(s *Subscription) *localTopic {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := subKey{s.topic, s.shared}
	lt := r.topics[key]
	if lt == nil {
		lt = &localTopic{key: key}
		r.topics[key] = lt
	}
	lt.out.add(s, s.shared, func(s *Subscription, latest Message) { s.push(latest) })
	return lt
}

// deliver hands m to every local broadcast subscriber of topic, or, when shared, to
// one shared subscriber (in turn), without blocking.
func (r *localSubs) deliver(topic string, m Message, shared bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lt := r.topics[subKey{topic, shared}]
	if lt == nil || lt.out.empty() {
		if shared {
			r.c.cfg.Logger.Warn("cluster: shared message arrived after the last shared subscriber left; dropped", "topic", topic)
			r.dropped.Add(1)
		}
		return
	}
	if shared {
		if s, _ := lt.out.turn(); s.push(m) {
			r.dropped.Add(1)
		}
		return
	}
	lt.out.keep(m)
	for _, s := range lt.out.broadcast {
		if s.push(m) {
			r.dropped.Add(1)
		}
	}
}

// ensure makes sure topic is subscribed on b (once per backend).
func (r *localSubs) ensure(ctx context.Context, lt *localTopic, b backend) error {
	lt.opMu.Lock()
	defer lt.opMu.Unlock()
	r.mu.Lock()
	empty := lt.out.empty()
	r.mu.Unlock()
	if empty || lt.activeOn == b {
		return nil
	}
	if err := b.subscribe(ctx, lt.key.topic, lt.key.shared); err != nil {
		return err
	}
	lt.activeOn = b
	return nil
}

// remove unregisters s; the last local subscriber of a topic unsubscribes it upstream.
func (r *localSubs) remove(ctx context.Context, s *Subscription) error {
	r.mu.Lock()
	lt := r.topics[subKey{s.topic, s.shared}]
	if lt == nil {
		r.mu.Unlock()
		return nil
	}
	lt.out.remove(s, s.shared)
	empty := lt.out.empty()
	r.mu.Unlock()
	if !empty {
		return nil
	}
	lt.opMu.Lock()
	defer lt.opMu.Unlock()
	var err error
	r.mu.Lock()
	empty = lt.out.empty()
	r.mu.Unlock()
	if empty && lt.activeOn != nil {
		b := lt.activeOn
		lt.activeOn = nil
		if b == r.c.currentBackend() {
			err = b.unsubscribe(ctx, lt.key.topic, lt.key.shared)
			// A lost Leader took its subscription table with it, and the next Leader
			// never hears of this topic: nothing is left to undo.
			if errors.Is(err, errNotSent) || errors.Is(err, ErrLeaderLost) || errors.Is(err, ErrClosed) {
				err = nil
			}
		}
	}
	r.mu.Lock()
	if lt.out.empty() && r.topics[lt.key] == lt {
		delete(r.topics, lt.key)
		lt.out.forget()
	}
	r.mu.Unlock()
	return err
}

// releaseLatest drops the table's holds on the topics' latest messages (at Close).
func (r *localSubs) releaseLatest() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, lt := range r.topics {
		lt.out.forget()
	}
}

// snapshot returns the topics that have subscribers.
func (r *localSubs) snapshot() []*localTopic {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*localTopic, 0, len(r.topics))
	for _, lt := range r.topics {
		if !lt.out.empty() {
			out = append(out, lt)
		}
	}
	return out
}

func (r *localSubs) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, lt := range r.topics {
		n += len(lt.out.broadcast) + len(lt.out.shared)
	}
	return n
}

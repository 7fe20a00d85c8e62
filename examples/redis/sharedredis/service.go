// Package sharedredis is a cluster.Service that wraps a go-redis client, so that every
// process of a worker pool on one host uses the Leader's Redis connections instead of
// opening its own: one connection for commands and one for pub/sub (go-redis keeps
// subscriptions on a connection of their own), whatever the number of processes.
//
//	c, err := cluster.Join(ctx, cluster.Config{
//		Name:       "redis",
//		NewService: sharedredis.NewService(redis.Options{Addr: "127.0.0.1:6379"}),
//	})
//	n, err := sharedredis.Incr.Invoke(ctx, c, "hits")         // INCR hits, through the Leader
//	sub, err := c.Subscribe(ctx, "news", fn)                   // SUBSCRIBE news
//	sub, err = c.Subscribe(ctx, "psub:alerts.*", fn)           // PSUBSCRIBE alerts.*
//	err = c.Publish(ctx, "news", cluster.Message{Data: b})     // PUBLISH news b
//
// Invoke runs the commands of the typed methods in methods.go (Get, Set, Del, Incr,
// IncrBy). A topic is a Redis channel, except that a topic starting with
// PatternPrefix ("psub:") is a glob pattern: Subscribe uses PSUBSCRIBE with the rest
// of the topic, and a message matched by it is delivered on that topic. (A channel
// whose own name starts with "psub:" is reached with the pattern "psub:psub:name", a
// pattern without glob characters.) Payloads are Message.Data; a Message with a Blob
// or Files is refused.
//
// The cluster's semantics apply on top of Redis's: the Leader holds one Redis
// subscription per topic for the whole host, and a process that subscribes late gets
// the topic's latest message at once, which plain Redis pub/sub does not do. After a
// failover the new Leader subscribes again; messages published in between are lost,
// as they are for any Redis subscriber that reconnects.
package sharedredis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cluster-client-go/cluster"
)

// PatternPrefix marks a topic that is a Redis glob pattern (PSUBSCRIBE).
const PatternPrefix = "psub:"

// ackTimeout bounds the wait for Redis to confirm an UNSUBSCRIBE, which has no
// caller's context.
const ackTimeout = 5 * time.Second

// ErrClosed is returned by the methods of a closed Service.
var ErrClosed = errors.New("sharedredis: service closed")

// NewService returns a cluster.Config.NewService that connects to Redis with opt.
// Fields left zero differ from go-redis's defaults in three ways, so that Redis sees
// a fixed, recognisable set of connections from the Leader:
//
//   - PoolSize 0 means 1: one command connection, on which the commands that arrive
//     together, from any members, are sent as one pipeline (InvokeBatch; see
//     cluster.BatchInvoker for the order in which batches start);
//   - PipelinePoolSize 0 means -1: no separate pool of pipeline connections;
//   - ClientName "" means "cluster-leader-<pid>", visible in CLIENT LIST.
//
// The Service pings Redis before it returns, so that a Leader that cannot reach Redis
// gives up its term (cluster.Config.NewService) instead of serving errors.
func NewService(opt redis.Options) func(context.Context) (cluster.Service, error) {
	return func(ctx context.Context) (cluster.Service, error) {
		o := opt
		if o.PoolSize == 0 {
			o.PoolSize = 1
		}
		if o.PipelinePoolSize == 0 {
			o.PipelinePoolSize = -1
		}
		if o.ClientName == "" {
			o.ClientName = fmt.Sprintf("cluster-leader-%d", os.Getpid())
		}
		return Open(ctx, &o)
	}
}

// Service is the cluster.Service that NewService builds. Its methods are safe for
// concurrent use.
type Service struct {
	rdb  *redis.Client
	cmds commands // rdb's autopipeliner, for Invoke
	ps   *redis.PubSub
	done chan struct{} // closed when read has returned

	subMu sync.Mutex // serialises SUBSCRIBE and UNSUBSCRIBE with their acks

	mu      sync.Mutex
	closed  bool
	routes  map[string][]*subscriber // topic -> its subscribers; replaced, never modified
	waiters map[ack][]chan struct{}  // confirmations awaited from Redis

	closeOnce sync.Once
	closeErr  error
}

type subscriber struct{ emit func(cluster.Message) }

// ack is a confirmation Redis sends on the pub/sub connection: Kind is "subscribe",
// "unsubscribe", "psubscribe" or "punsubscribe".
type ack struct{ kind, name string }

// Open connects to Redis with opt as it is (see NewService for the defaults this
// package prefers) and returns the Service. It pings Redis first, and fails if Redis
// does not answer within ctx.
func Open(ctx context.Context, opt *redis.Options) (*Service, error) {
	rdb := redis.NewClient(opt)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("sharedredis: connecting to %s: %w", opt.Addr, err)
	}
	// Invoke (InvokeOneway calls) and Publish share round trips on the command
	// connection through go-redis's blocking autopipeliner (one batch at a time, in
	// order); the other calls come in batches, each one pipeline (InvokeBatch).
	ap, err := rdb.AutoPipeline()
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("sharedredis: %w", err)
	}
	s := &Service{
		rdb:     rdb,
		cmds:    ap,
		ps:      rdb.Subscribe(context.Background()),
		done:    make(chan struct{}),
		routes:  map[string][]*subscriber{},
		waiters: map[ack][]chan struct{}{},
	}
	// go-redis reads the pub/sub connection on a goroutine of its own, pings it when
	// idle and reconnects and re-subscribes when it breaks; the channel carries
	// messages and confirmations, and is closed by PubSub.Close.
	go s.read(s.ps.ChannelWithSubscriptions())
	return s, nil
}

// read routes what arrives on the pub/sub connection until the PubSub is closed.
func (s *Service) read(ch <-chan any) {
	defer close(s.done)
	for m := range ch {
		switch m := m.(type) {
		case *redis.Subscription:
			s.confirm(ack{m.Kind, m.Channel})
		case *redis.Message:
			topic := m.Channel
			if m.Pattern != "" {
				topic = PatternPrefix + m.Pattern
			}
			data := []byte(m.Payload)
			// emit never blocks, so it runs under mu: once a cancel has taken its
			// subscriber out, that subscriber's emit is never called again.
			s.mu.Lock()
			for _, sub := range s.routes[topic] {
				sub.emit(cluster.Message{Data: data})
			}
			s.mu.Unlock()
		}
	}
}

func (s *Service) confirm(a ack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.waiters[a] {
		close(w)
	}
	delete(s.waiters, a)
}

// expectLocked registers a wait for confirmation a. s.mu must be held.
func (s *Service) expectLocked(a ack) chan struct{} {
	w := make(chan struct{})
	s.waiters[a] = append(s.waiters[a], w)
	return w
}

// await waits for w, registered for a, within ctx.
func (s *Service) await(ctx context.Context, a ack, w chan struct{}) error {
	select {
	case <-w:
		return nil
	case <-ctx.Done():
	case <-s.done:
	}
	s.forget(a, w)
	select {
	case <-w: // confirmed after all
		return nil
	case <-s.done:
		return ErrClosed
	default:
		return fmt.Errorf("waiting for Redis to confirm %s %s: %w", a.kind, a.name, context.Cause(ctx))
	}
}

// forget withdraws the wait w for a.
func (s *Service) forget(a ack, w chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiters[a] = slices.DeleteFunc(s.waiters[a], func(x chan struct{}) bool { return x == w })
	if len(s.waiters[a]) == 0 {
		delete(s.waiters, a)
	}
}

// kind says whether topic is a channel or a pattern, and its Redis name.
func kind(topic string) (sub, unsub, name string) {
	if p, ok := strings.CutPrefix(topic, PatternPrefix); ok {
		return "psubscribe", "punsubscribe", p
	}
	return "subscribe", "unsubscribe", topic
}

// Subscribe subscribes to topic on Redis (SUBSCRIBE, or PSUBSCRIBE for a topic
// starting with PatternPrefix) and returns once Redis has confirmed it, so a message
// published after Subscribe returns is delivered to emit. Subscribing to a topic
// that is already subscribed adds emit without a second Redis subscription. The
// returned cancel removes emit, never calls it again once it returns, and, for the
// topic's last emit, unsubscribes on Redis and waits (up to 5 s) for the
// confirmation. cancel is idempotent.
func (s *Service) Subscribe(ctx context.Context, topic string, emit func(cluster.Message)) (func(), error) {
	subKind, _, name := kind(topic)
	if name == "" {
		return nil, fmt.Errorf("sharedredis: subscribe %q: empty channel or pattern", topic)
	}
	sub := &subscriber{emit: emit}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	first := len(s.routes[topic]) == 0
	s.routes[topic] = append(slices.Clip(s.routes[topic]), sub)
	var w chan struct{}
	a := ack{subKind, name}
	if first {
		w = s.expectLocked(a)
	}
	s.mu.Unlock()
	if first {
		err := s.send(ctx, a)
		if err != nil {
			s.forget(a, w)
		} else {
			err = s.await(ctx, a, w)
		}
		if err != nil {
			s.remove(topic, sub)
			return nil, fmt.Errorf("sharedredis: %s %s: %w", subKind, name, err)
		}
	}
	return sync.OnceFunc(func() {
		s.subMu.Lock()
		defer s.subMu.Unlock()
		s.remove(topic, sub)
	}), nil
}

// remove takes sub out of topic and, if it was the last one, unsubscribes on Redis.
// s.subMu must be held.
func (s *Service) remove(topic string, sub *subscriber) {
	_, unsubKind, name := kind(topic)
	s.mu.Lock()
	subs := slices.DeleteFunc(slices.Clone(s.routes[topic]), func(x *subscriber) bool { return x == sub })
	last := len(subs) == 0
	if last {
		delete(s.routes, topic)
	} else {
		s.routes[topic] = subs
	}
	a := ack{unsubKind, name}
	var w chan struct{}
	if last && !s.closed {
		w = s.expectLocked(a)
	}
	s.mu.Unlock()
	if w == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	if err := s.send(ctx, a); err != nil {
		// Not sent: go-redis has forgotten the channel all the same, so a reconnect will
		// not subscribe it again.
		s.forget(a, w)
		return
	}
	_ = s.await(ctx, a, w)
}

// send writes the (un)subscribe command whose confirmation is a.
func (s *Service) send(ctx context.Context, a ack) error {
	switch a.kind {
	case "subscribe":
		return s.ps.Subscribe(ctx, a.name)
	case "psubscribe":
		return s.ps.PSubscribe(ctx, a.name)
	case "unsubscribe":
		return s.ps.Unsubscribe(ctx, a.name)
	default:
		return s.ps.PUnsubscribe(ctx, a.name)
	}
}

// Publish sends msg.Data to the channel topic (PUBLISH). A pattern topic is refused.
func (s *Service) Publish(ctx context.Context, topic string, msg cluster.Message) error {
	if err := dataOnly("publish", topic, msg); err != nil {
		return err
	}
	if strings.HasPrefix(topic, PatternPrefix) {
		return fmt.Errorf("sharedredis: publish %q: a pattern topic cannot be published to", topic)
	}
	return s.cmds.Publish(ctx, topic, msg.Data).Err()
}

// Close ends every subscription by closing the pub/sub connection (emit is not called
// once Close has begun), closes the command connection and waits for the pub/sub
// reader. It is idempotent and returns the same error every time.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.routes = map[string][]*subscriber{}
		s.mu.Unlock()
		err := s.ps.Close()
		<-s.done
		s.closeErr = errors.Join(err, s.rdb.Close())
	})
	return s.closeErr
}

func dataOnly(op, name string, m cluster.Message) error {
	if m.Blob != nil || len(m.Files) > 0 {
		return fmt.Errorf("sharedredis: %s %q: Redis payloads are Message.Data only, not a Blob or Files", op, name)
	}
	return nil
}

// commands are the go-redis commands the Service runs.
type commands interface {
	Get(ctx context.Context, key string) *redis.StringCmd
	Set(ctx context.Context, key string, value any, expiration time.Duration) *redis.StatusCmd
	Del(ctx context.Context, keys ...string) *redis.IntCmd
	Incr(ctx context.Context, key string) *redis.IntCmd
	IncrBy(ctx context.Context, key string, value int64) *redis.IntCmd
	Publish(ctx context.Context, channel string, message any) *redis.IntCmd
}

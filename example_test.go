package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/blob"
)

// broker is a tiny in-memory Service: "greet" answers, and Publish delivers to the
// subscribers of a topic, as a real pub/sub server would.
type broker struct {
	mu   sync.Mutex
	subs map[string]map[int]func(cluster.Message)
	next int
}

func newBroker(context.Context) (cluster.Service, error) {
	return &broker{subs: map[string]map[int]func(cluster.Message){}}, nil
}

func (b *broker) Invoke(_ context.Context, method string, req cluster.Message) (cluster.Message, error) {
	if method != "greet" {
		return cluster.Message{}, fmt.Errorf("unknown method %q", method)
	}
	return cluster.Message{Data: []byte("hello, " + string(req.Data))}, nil
}

func (b *broker) Subscribe(_ context.Context, topic string, emit func(cluster.Message)) (func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs[topic] == nil {
		b.subs[topic] = map[int]func(cluster.Message){}
	}
	b.next++
	id := b.next
	b.subs[topic][id] = emit
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs[topic], id)
	}, nil
}

func (b *broker) Publish(_ context.Context, topic string, msg cluster.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, emit := range b.subs[topic] {
		emit(msg)
	}
	return nil
}

func (b *broker) Close() error { return nil }

func Example() {
	dir, _ := os.MkdirTemp("", "")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	// Every process of the pool runs this; the first becomes the Leader and builds the
	// Service, the others forward their calls to it.
	c, err := cluster.Join(ctx, cluster.Config{
		Name:       "example",
		Dir:        dir,
		NewService: newBroker,
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	out, err := c.Invoke(ctx, "greet", cluster.Message{Data: []byte("world")})
	fmt.Println(string(out.Data), err)

	got := make(chan string, 1)
	sub, _ := c.Subscribe(ctx, "news", func(m cluster.Message) { got <- string(m.Data) })
	defer sub.Close()
	_ = c.Publish(ctx, "news", cluster.Message{Data: []byte("extra!")})
	fmt.Println(<-got)
	fmt.Println(c.Role().Role)
	// Output:
	// hello, world <nil>
	// extra!
	// leader
}

func ExampleTopic() {
	dir, _ := os.MkdirTemp("", "")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	c, err := cluster.Join(ctx, cluster.Config{Name: "typed", Dir: dir, NewService: newBroker, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// A typed handle: requests and responses are encoded with JSON by default.
	type News struct{ Headline string }
	news := cluster.Topic[News]{Name: "news"}
	got := make(chan News, 1)
	sub, _ := news.Subscribe(ctx, c, func(n News) { got <- n })
	defer sub.Close()
	_ = news.Publish(ctx, c, News{Headline: "typed"})
	fmt.Println((<-got).Headline)
	// Output:
	// typed
}

// registry is a Service that keeps registrations, as a service registry would.
type registry struct {
	broker
	mu    sync.Mutex
	addrs []string
}

func (r *registry) Publish(ctx context.Context, topic string, msg cluster.Message) error {
	r.mu.Lock()
	r.addrs = append(r.addrs, string(msg.Data))
	r.mu.Unlock()
	return r.broker.Publish(ctx, topic, msg)
}

// Withdraw makes registry a cluster.Withdrawer: the Leader calls it when a member
// withdraws a registration or dies.
func (r *registry) Withdraw(_ context.Context, _ string, msg cluster.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs = slices.DeleteFunc(r.addrs, func(a string) bool { return a == string(msg.Data) })
	return nil
}

func ExampleClient_Register() {
	dir, _ := os.MkdirTemp("", "")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	reg := &registry{broker: broker{subs: map[string]map[int]func(cluster.Message){}}}
	c, err := cluster.Join(ctx, cluster.Config{
		Name: "registry", Dir: dir, Logger: slog.New(slog.DiscardHandler),
		NewService: func(context.Context) (cluster.Service, error) { return reg, nil },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// A worker announces itself. Every future Leader gets this registration again from
	// this member, until it withdraws it or dies.
	r, err := c.Register(ctx, "workers", cluster.Message{Data: []byte("10.0.0.7:8080")})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(reg.addrs)
	_ = r.Withdraw(ctx)
	fmt.Println(reg.addrs)
	// Output:
	// [10.0.0.7:8080]
	// []
}

func ExampleShared() {
	dir, _ := os.MkdirTemp("", "")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	c, err := cluster.Join(ctx, cluster.Config{Name: "jobs", Dir: dir, NewService: newBroker, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// Two workers share the "jobs" topic: each job goes to one of them.
	var mu sync.Mutex
	done := map[string]int{}
	var wg sync.WaitGroup
	wg.Add(4)
	for _, name := range []string{"a", "b"} {
		sub, _ := c.Subscribe(ctx, "jobs", func(cluster.Message) {
			mu.Lock()
			done[name]++
			mu.Unlock()
			wg.Done()
		}, cluster.Shared())
		defer sub.Close()
	}
	for _, job := range []string{"1", "2", "3", "4"} {
		_ = c.Publish(ctx, "jobs", cluster.Message{Data: []byte(job)})
	}
	wg.Wait()
	fmt.Println(done["a"], done["b"])
	// Output:
	// 2 2
}

func ExampleSubscription_First() {
	dir, _ := os.MkdirTemp("", "")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	c, err := cluster.Join(ctx, cluster.Config{Name: "first", Dir: dir, NewService: newBroker, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	sub, _ := c.Subscribe(ctx, "config", func(cluster.Message) {})
	defer sub.Close()
	// Wait at most 10ms for a first value; nothing was published, so this times out
	// and the subscription stays.
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	_, err = sub.First(short)
	fmt.Println(errors.Is(err, cluster.ErrTimeout))
	_ = c.Publish(ctx, "config", cluster.Message{Data: []byte("v1")})
	m, _ := sub.First(ctx)
	fmt.Println(string(m.Data))
	// Output:
	// true
	// v1
}

// A large payload travels as a Blob: written once into sealed shared memory, passed as
// a file descriptor and mapped read-only by every receiver, so a snapshot fanned out to
// the whole pool is never copied. Over TCP it is sent inline, transparently.
func ExampleMessage_blob() {
	dir, _ := os.MkdirTemp("", "")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	join := func() *cluster.Client {
		c, err := cluster.Join(ctx, cluster.Config{Name: "snapshots", Dir: dir, NewService: newBroker, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			panic(err)
		}
		return c
	}
	leader, follower := join(), join() // in real life, two processes
	defer leader.Close()
	defer follower.Close()

	got := make(chan string, 1)
	sub, _ := follower.Subscribe(ctx, "snapshot", func(m cluster.Message) {
		// The Blob is lent to the callback: read it here, or Clone the Message to keep it.
		got <- fmt.Sprintf("%s: %d bytes, starts with %q", m.Data, m.Blob.Len(), m.Blob.Bytes()[:5])
	})
	defer sub.Close()

	snap, err := blob.New(append([]byte("hello"), make([]byte, 8<<20)...))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer snap.Close() // what you send stays yours
	_ = leader.Publish(ctx, "snapshot", cluster.Message{Data: []byte("v42"), Blob: snap})
	fmt.Println(<-got)
	// Output:
	// v42: 8388613 bytes, starts with "hello"
}

// errUserNotFound is a sentinel of the application, returned by its Service.
var errUserNotFound = errors.New("user not found")

// users is a Service whose "getUser" fails with errUserNotFound.
type users struct{ broker }

func (u *users) Invoke(_ context.Context, method string, req cluster.Message) (cluster.Message, error) {
	return cluster.Message{}, fmt.Errorf("getUser %s: %w", req.Data, errUserNotFound)
}

// Registered errors keep their identity across processes: a Follower's caller matches
// the Service's sentinel with errors.Is, as the Leader's does.
func ExampleConfig_errors() {
	dir, _ := os.MkdirTemp("", "")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	cfg := cluster.Config{
		Name:       "users",
		Dir:        dir,
		NewService: func(context.Context) (cluster.Service, error) { return &users{}, nil },
		Errors:     map[string]error{"user-not-found": errUserNotFound},
		Identity:   "users-api/v1",
		Logger:     slog.New(slog.DiscardHandler),
	}
	leader, _ := cluster.Join(ctx, cfg)
	defer leader.Close()
	follower, _ := cluster.Join(ctx, cfg) // in production: another process
	defer follower.Close()

	_, err := follower.Invoke(ctx, "getUser", cluster.Message{Data: []byte("42")})
	fmt.Println(follower.Role().Role, errors.Is(err, errUserNotFound))
	fmt.Println(err)
	// Output:
	// follower true
	// cluster: invoke "getUser": getUser 42: user not found
}

// A panic in the Service fails the call that caused it, in every role, and nothing
// else: the Leader recovers and goes on serving.
func ExampleErrServicePanic() {
	dir, _ := os.MkdirTemp("", "")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	c, _ := cluster.Join(ctx, cluster.Config{
		Name: "fragile",
		Dir:  dir,
		NewService: func(context.Context) (cluster.Service, error) {
			return &panicky{}, nil
		},
		Logger: slog.New(slog.DiscardHandler), // the stack is logged at ERROR
	})
	defer c.Close()
	_, err := c.Invoke(ctx, "divide", cluster.Message{})
	fmt.Println(errors.Is(err, cluster.ErrServicePanic))
	fmt.Println(err)
	fmt.Println(c.Stats().Panics, c.Role().Role)
	// Output:
	// true
	// cluster: invoke "divide": Service.Invoke "divide" panicked: runtime error: integer divide by zero (the leader recovered; its log has the stack)
	// 1 leader
}

type panicky struct{ broker }

func (*panicky) Invoke(context.Context, string, cluster.Message) (cluster.Message, error) {
	zero := 0
	return cluster.Message{Data: []byte{byte(1 / zero)}}, nil
}

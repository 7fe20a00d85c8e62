package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/cluster-client-go/cluster"
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

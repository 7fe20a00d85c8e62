package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/cluster-client-go/cluster"
)

// counters is a Service whose "incr" adds one to a counter. It is a BatchInvoker: a
// batch of calls that arrive together costs one pass under its lock, as it would cost
// a real client one round trip to its server. Its Invoke serves a lone call as a batch
// of one.
type counters struct {
	mu sync.Mutex
	n  map[string]int
}

func (s *counters) InvokeBatch(ctx context.Context, calls []*cluster.Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range calls {
		if c.Method != "incr" {
			c.Return(cluster.Message{}, fmt.Errorf("unknown method %q", c.Method))
			continue
		}
		if err := c.Context().Err(); err != nil { // this caller gave up
			c.Return(cluster.Message{}, err)
			continue
		}
		key := string(c.Req.Data)
		s.n[key]++
		c.Return(cluster.Message{Data: strconv.AppendInt(nil, int64(s.n[key]), 10)}, nil)
	}
}

func (s *counters) Invoke(ctx context.Context, method string, req cluster.Message) (cluster.Message, error) {
	c := cluster.NewCall(ctx, method, req)
	s.InvokeBatch(ctx, []*cluster.Call{c})
	return c.Result()
}

func (s *counters) Subscribe(context.Context, string, func(cluster.Message)) (func(), error) {
	return nil, errors.New("counters have no topics")
}

func (s *counters) Publish(context.Context, string, cluster.Message) error {
	return errors.New("counters have no topics")
}

func (s *counters) Close() error { return nil }

func ExampleBatchInvoker() {
	dir, _ := os.MkdirTemp("", "")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	c, err := cluster.Join(ctx, cluster.Config{
		Name: "counters",
		Dir:  dir,
		NewService: func(context.Context) (cluster.Service, error) {
			return &counters{n: map[string]int{}}, nil
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	for range 3 {
		out, err := c.Invoke(ctx, "incr", cluster.Message{Data: []byte("hits")})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(string(out.Data))
	}
	// Output:
	// 1
	// 2
	// 3
}

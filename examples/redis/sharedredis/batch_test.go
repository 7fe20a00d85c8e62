package sharedredis_test

import (
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/examples/redis/internal/redistest"
	"github.com/cluster-client-go/cluster/examples/redis/sharedredis"
)

// TestInvokeBatch: one pipeline runs the batch's commands in order, and each call gets
// its own reply or error.
func TestInvokeBatch(t *testing.T) {
	_, svc := open(t)
	ctx := testContext(t)
	call := func(method, data string) *cluster.Call {
		return cluster.NewCall(ctx, method, cluster.Message{Data: []byte(data)})
	}
	calls := []*cluster.Call{
		call(sharedredis.Set.Name, `{"key":"greeting","value":"hi"}`),
		call(sharedredis.Get.Name, `"greeting"`),
		call(sharedredis.Incr.Name, `"hits"`),
		call(sharedredis.Incr.Name, `"greeting"`), // not an integer: this call fails alone
		call(sharedredis.Incr.Name, `{`),          // not a request: fails before Redis
		call("redis.flushall", `""`),
		call(sharedredis.IncrBy.Name, `{"key":"hits","by":10}`),
		call(sharedredis.Get.Name, `"absent"`),
		call(sharedredis.Del.Name, `[]`),
	}
	svc.InvokeBatch(ctx, calls)
	want := []struct{ data, err string }{
		{data: `{}`}, {data: `"hi"`}, {data: `1`}, {err: "not an integer"}, {err: "decoding"},
		{err: "unknown method"}, {data: `11`}, {data: `null`}, {data: `0`},
	}
	for i, c := range calls {
		out, err := c.Result()
		if want[i].err != "" {
			require.ErrorContains(t, err, want[i].err, "call %d (%s)", i, c.Method)
			continue
		}
		require.NoError(t, err, "call %d (%s)", i, c.Method)
		require.Equal(t, want[i].data, string(out.Data), "call %d (%s)", i, c.Method)
	}
}

// TestFollowersCallsAreBatched: the Followers' INCRs, served in batches, each get
// their own reply.
func TestFollowersCallsAreBatched(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	var clients []*cluster.Client
	for i := range 3 {
		c, err := cluster.Join(ctx, cluster.Config{
			Name: "redis", Dir: dir,
			NewService: sharedredis.NewService(redis.Options{Addr: srv.Addr}),
			Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.Equal(t, i > 0, c.Role().Role == cluster.RoleFollower)
		clients = append(clients, c)
	}
	const callers, calls = 8, 40
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, len(clients)*callers)
	for _, c := range clients {
		for range callers {
			wg.Go(func() {
				for range calls {
					n, err := sharedredis.Incr.Invoke(ctx, c, "hits")
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					seen[n] = true
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	total := len(clients) * callers * calls
	require.Len(t, seen, total, "every INCR got its own reply")
	require.Equal(t, strconv.Itoa(total), cli(t, srv, "GET", "hits"))
}

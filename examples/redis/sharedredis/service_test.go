package sharedredis_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/blob"
	"github.com/cluster-client-go/cluster/examples/redis/internal/redistest"
	"github.com/cluster-client-go/cluster/examples/redis/sharedredis"
)

func TestMain(m *testing.M) { redistest.VerifyTestMain(m) }

// waitTimeout bounds every "eventually" in these tests; they poll, never sleep.
const waitTimeout = 30 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// open starts a redis-server and a Service on it, with NewService's defaults.
func open(t *testing.T) (*redistest.Server, *sharedredis.Service) {
	t.Helper()
	srv := redistest.Start(t)
	svc, err := sharedredis.NewService(redis.Options{Addr: srv.Addr})(testContext(t))
	require.NoError(t, err)
	t.Cleanup(func() { svc.Close() })
	return srv, svc.(*sharedredis.Service)
}

// inbox collects emitted messages; its emit never blocks.
type inbox chan cluster.Message

func newInbox() inbox { return make(inbox, 1024) }

func (in inbox) emit(m cluster.Message) {
	select {
	case in <- m:
	default:
		panic("inbox full")
	}
}

func (in inbox) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-in:
		return string(m.Data)
	case <-time.After(waitTimeout):
		t.Fatal("no message")
		return ""
	}
}

// empty says no message is queued. Messages are delivered in order on one connection,
// so after a later message has arrived elsewhere, an earlier one would be here.
func (in inbox) empty(t *testing.T) {
	t.Helper()
	select {
	case m := <-in:
		t.Fatalf("unexpected message %q", m.Data)
	default:
	}
}

func cli(t *testing.T, srv *redistest.Server, args ...string) string {
	t.Helper()
	out, err := srv.CLI(testContext(t), args...)
	require.NoError(t, err)
	return out
}

// numsub is PUBSUB NUMSUB channel: the connections subscribed to it.
func numsub(t *testing.T, srv *redistest.Server, channel string) int {
	t.Helper()
	lines := strings.Fields(cli(t, srv, "PUBSUB", "NUMSUB", channel))
	require.Len(t, lines, 2)
	n, err := strconv.Atoi(lines[1])
	require.NoError(t, err)
	return n
}

func numpat(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	n, err := strconv.Atoi(cli(t, srv, "PUBSUB", "NUMPAT"))
	require.NoError(t, err)
	return n
}

func publish(t *testing.T, srv *redistest.Server, channel, payload string) int {
	t.Helper()
	n, err := strconv.Atoi(cli(t, srv, "PUBLISH", channel, payload))
	require.NoError(t, err)
	return n
}

// TestSubscribeChannelAndPattern: a topic is a channel, a "psub:" topic a pattern;
// Subscribe returns once Redis has the subscription, and each message arrives on the
// topic that matched it.
func TestSubscribeChannelAndPattern(t *testing.T) {
	srv, svc := open(t)
	ctx := testContext(t)
	news, alerts := newInbox(), newInbox()
	cancelNews, err := svc.Subscribe(ctx, "news", news.emit)
	require.NoError(t, err)
	defer cancelNews()
	cancelAlerts, err := svc.Subscribe(ctx, "psub:alerts.*", alerts.emit)
	require.NoError(t, err)
	defer cancelAlerts()

	require.Equal(t, 1, numsub(t, srv, "news"), "SUBSCRIBE news is confirmed before Subscribe returns")
	require.Equal(t, 1, numpat(t, srv), "PSUBSCRIBE alerts.* is confirmed before Subscribe returns")

	require.Equal(t, 1, publish(t, srv, "news", "hello"))
	require.Equal(t, 1, publish(t, srv, "alerts.fire", "hot"))
	require.Equal(t, 0, publish(t, srv, "alerts", "no dot: the pattern does not match"))
	require.Equal(t, 1, publish(t, srv, "alerts.flood", "wet"))
	require.Equal(t, "hello", news.next(t))
	require.Equal(t, "hot", alerts.next(t))
	require.Equal(t, "wet", alerts.next(t))
	news.empty(t)
	alerts.empty(t)
}

// TestCancelStopsRedisSubscription: two subscribers of a topic share one Redis
// subscription; the last cancel ends it on Redis before it returns, and emit is never
// called after its cancel.
func TestCancelStopsRedisSubscription(t *testing.T) {
	srv, svc := open(t)
	ctx := testContext(t)
	a, b := newInbox(), newInbox()
	cancelA, err := svc.Subscribe(ctx, "jobs", a.emit)
	require.NoError(t, err)
	cancelB, err := svc.Subscribe(ctx, "jobs", b.emit)
	require.NoError(t, err)
	require.Equal(t, 1, numsub(t, srv, "jobs"))

	require.Equal(t, 1, publish(t, srv, "jobs", "j1"))
	require.Equal(t, "j1", a.next(t))
	require.Equal(t, "j1", b.next(t))

	cancelA()
	cancelA() // idempotent
	require.Equal(t, 1, numsub(t, srv, "jobs"), "b still subscribes")
	require.Equal(t, 1, publish(t, srv, "jobs", "j2"))
	require.Equal(t, "j2", b.next(t))
	a.empty(t)

	cancelB()
	require.Equal(t, 0, numsub(t, srv, "jobs"), "UNSUBSCRIBE is confirmed before cancel returns")
	require.Equal(t, 0, publish(t, srv, "jobs", "j3"))

	cancelP, err := svc.Subscribe(ctx, "psub:jobs.*", a.emit)
	require.NoError(t, err)
	require.Equal(t, 1, numpat(t, srv))
	cancelP()
	require.Equal(t, 0, numpat(t, srv), "PUNSUBSCRIBE is confirmed before cancel returns")

	// Subscribing again after the last cancel subscribes on Redis again.
	cancelA, err = svc.Subscribe(ctx, "jobs", a.emit)
	require.NoError(t, err)
	defer cancelA()
	require.Equal(t, 1, publish(t, srv, "jobs", "j4"))
	require.Equal(t, "j4", a.next(t))
	b.empty(t)
}

// TestRedisRestart: when Redis restarts, the Service reconnects both connections by
// itself and subscribes again: later messages arrive and commands run, still on two
// connections.
func TestRedisRestart(t *testing.T) {
	srv, svc := open(t)
	ctx := testContext(t)
	news, alerts := newInbox(), newInbox()
	cancelNews, err := svc.Subscribe(ctx, "news", news.emit)
	require.NoError(t, err)
	defer cancelNews()
	cancelAlerts, err := svc.Subscribe(ctx, "psub:alerts.*", alerts.emit)
	require.NoError(t, err)
	defer cancelAlerts()

	srv.Restart(t)
	// go-redis notices the broken pub/sub connection, redials and re-subscribes on its
	// own schedule: wait for both subscriptions on the new server.
	for numsub(t, srv, "news") != 1 || numpat(t, srv) != 1 {
		select {
		case <-ctx.Done():
			t.Fatal("the Service did not subscribe again after Redis restarted")
		case <-time.After(20 * time.Millisecond):
		}
	}
	require.Equal(t, 1, publish(t, srv, "news", "back"))
	require.Equal(t, 1, publish(t, srv, "alerts.up", "up"))
	require.Equal(t, "back", news.next(t))
	require.Equal(t, "up", alerts.next(t))

	// The first command after the restart may meet the broken connection; go-redis
	// retries it on a new one.
	out, err := svc.Invoke(ctx, sharedredis.Incr.Name, cluster.Message{Data: []byte(`"hits"`)})
	require.NoError(t, err)
	require.Equal(t, "1", string(out.Data))
	// go-redis may probe the server with a connection of its own while it was down;
	// such a probe closes at once.
	name := fmt.Sprintf("cluster-leader-%d", os.Getpid())
	for {
		clients, err := srv.Clients(ctx)
		require.NoError(t, err)
		ok := len(clients) == 2
		for _, c := range clients {
			ok = ok && c.Name == name
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after the restart Redis does not see the Service's two connections:%s", describe(clients))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestInvokeThroughCluster: the typed methods, called through a Client that leads
// its own cluster, run their Redis commands; Redis errors come back as RemoteErrors.
func TestInvokeThroughCluster(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	c := join(t, srv)

	v, err := sharedredis.Get.Invoke(ctx, c, "greeting")
	require.NoError(t, err)
	require.Nil(t, v, "a missing key is nil")

	_, err = sharedredis.Set.Invoke(ctx, c, sharedredis.SetArgs{Key: "greeting", Value: "hi"})
	require.NoError(t, err)
	v, err = sharedredis.Get.Invoke(ctx, c, "greeting")
	require.NoError(t, err)
	require.NotNil(t, v)
	require.Equal(t, "hi", *v)

	_, err = sharedredis.Set.Invoke(ctx, c, sharedredis.SetArgs{Key: "brief", Value: "x", TTL: time.Hour})
	require.NoError(t, err)
	ttl, err := strconv.Atoi(cli(t, srv, "TTL", "brief"))
	require.NoError(t, err)
	require.InDelta(t, 3600, ttl, 60, "SET with TTL sets an expiry")

	for want := int64(1); want <= 3; want++ {
		n, err := sharedredis.Incr.Invoke(ctx, c, "hits")
		require.NoError(t, err)
		require.Equal(t, want, n)
	}
	n, err := sharedredis.IncrBy.Invoke(ctx, c, sharedredis.IncrByArgs{Key: "hits", By: 10})
	require.NoError(t, err)
	require.EqualValues(t, 13, n)
	require.Equal(t, "13", cli(t, srv, "GET", "hits"))

	n, err = sharedredis.Del.Invoke(ctx, c, []string{"hits", "greeting", "absent"})
	require.NoError(t, err)
	require.EqualValues(t, 2, n)

	var re *cluster.RemoteError
	_, err = sharedredis.Incr.Invoke(ctx, c, "brief") // "x" is not an integer
	require.ErrorAs(t, err, &re)
	require.Contains(t, re.Message, "not an integer")

	_, err = c.Invoke(ctx, "redis.flushall", cluster.Message{})
	require.ErrorAs(t, err, &re)
	require.Contains(t, re.Message, "unknown method")
}

// TestPublishThroughCluster: Publish is PUBLISH, and a member's subscription gets it
// back from Redis.
func TestPublishThroughCluster(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	c := join(t, srv)
	got := newInbox()
	sub, err := c.Subscribe(ctx, "psub:chat.*", got.emit)
	require.NoError(t, err)
	defer sub.Close()
	require.NoError(t, c.Publish(ctx, "chat.general", cluster.Message{Data: []byte("hello")}))
	require.Equal(t, "hello", got.next(t))

	var re *cluster.RemoteError
	err = c.Publish(ctx, "psub:chat.*", cluster.Message{Data: []byte("x")})
	require.ErrorAs(t, err, &re, "a pattern is not a channel")

	b, err := blob.New([]byte("big"))
	require.NoError(t, err)
	defer b.Close()
	err = c.Publish(ctx, "chat.general", cluster.Message{Blob: b})
	require.ErrorAs(t, err, &re, "Redis payloads are Data only")
	require.Contains(t, re.Message, "Data only")
}

// TestConnections: whatever the load, the Service holds exactly two connections,
// named after the Leader's pid: one for commands, one for pub/sub.
func TestConnections(t *testing.T) {
	srv, svc := open(t)
	ctx := testContext(t)
	cancel, err := svc.Subscribe(ctx, "news", newInbox().emit)
	require.NoError(t, err)
	defer cancel()

	const callers, calls = 32, 50
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Go(func() {
			for range calls {
				if i%2 == 0 { // half of them in batches of one pipeline
					c := cluster.NewCall(ctx, sharedredis.Incr.Name, cluster.Message{Data: []byte(`"hits"`)})
					svc.InvokeBatch(ctx, []*cluster.Call{c})
					if _, err := c.Result(); err != nil {
						errs <- err
						return
					}
					continue
				}
				if _, err := svc.Invoke(ctx, sharedredis.Incr.Name, cluster.Message{Data: []byte(`"hits"`)}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, strconv.Itoa(callers*calls), cli(t, srv, "GET", "hits"))

	clients, err := srv.Clients(ctx)
	require.NoError(t, err)
	name := fmt.Sprintf("cluster-leader-%d", os.Getpid())
	var subs int
	for _, c := range clients {
		require.Equal(t, name, c.Name, "every connection is the Service's: %s", describe(clients))
		subs += c.Sub
	}
	require.Len(t, clients, 2, "one command connection and one pub/sub connection, not %s", describe(clients))
	require.Equal(t, 1, subs)
}

// TestClose: Close is idempotent, ends both connections, and a closed Service
// refuses new subscriptions.
func TestClose(t *testing.T) {
	srv, svc := open(t)
	ctx := testContext(t)
	cancel, err := svc.Subscribe(ctx, "news", newInbox().emit)
	require.NoError(t, err)
	require.NoError(t, svc.Close())
	require.NoError(t, svc.Close())
	cancel() // after Close: nothing to do, and no hang
	_, err = svc.Subscribe(ctx, "news", newInbox().emit)
	require.ErrorIs(t, err, sharedredis.ErrClosed)
	for {
		clients, err := srv.Clients(ctx)
		require.NoError(t, err)
		if len(clients) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("connections still open after Close: %+v", clients)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestRedisDown: NewService fails when Redis does not answer, so a Leader gives up
// its term instead of serving errors.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr
	srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := sharedredis.NewService(redis.Options{Addr: addr, MaxRetries: -1})(ctx)
	require.Error(t, err)
	require.Contains(t, err.Error(), addr)
}

// join makes a Client that leads a private cluster whose Service is on srv.
func join(t *testing.T, srv *redistest.Server) *cluster.Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	c, err := cluster.Join(testContext(t), cluster.Config{
		Name:       "redis",
		Dir:        dir,
		NewService: sharedredis.NewService(redis.Options{Addr: srv.Addr}),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func describe(clients []redistest.Client) string {
	var b strings.Builder
	for _, c := range clients {
		fmt.Fprintf(&b, "\n  id=%s name=%s sub=%d psub=%d cmd=%s", c.ID, c.Name, c.Sub, c.PSub, c.Cmd)
	}
	return b.String()
}

package upstream

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
)

// waitFor is generous: the server notices closes asynchronously, and -race is slow.
const waitFor = 30 * time.Second

func startServer(t *testing.T) *Server {
	t.Helper()
	s, err := Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func dial(t *testing.T, s *Server) *Service {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, err := Dial(ctx, s.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func invoke(t *testing.T, c *Service, method, data string) string {
	t.Helper()
	out, err := c.Invoke(testCtx(t), method, cluster.Message{Data: []byte(data)})
	require.NoError(t, err)
	return string(out.Data)
}

// collect returns an emit that sends each message's Data to the returned channel.
// emit must not block: the channel is large enough for every test here.
func collect() (func(cluster.Message), chan string) {
	ch := make(chan string, 2000)
	return func(m cluster.Message) {
		select {
		case ch <- string(m.Data):
		default:
			panic("collect: channel full")
		}
	}, ch
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(waitFor):
		t.Fatal("no message")
		return ""
	}
}

func requireNone(t *testing.T, ch <-chan string) {
	t.Helper()
	select {
	case s := <-ch:
		t.Fatalf("unexpected message %q", s)
	case <-time.After(20 * time.Millisecond):
	}
}

func TestConnCounts(t *testing.T) {
	s := startServer(t)
	require.Equal(t, 0, s.Conns())
	var cs []*Service
	for range 3 {
		c, err := Dial(testCtx(t), s.Addr())
		require.NoError(t, err)
		cs = append(cs, c)
	}
	t.Cleanup(func() {
		for _, c := range cs {
			require.NoError(t, c.Close())
		}
	})
	require.Eventually(t, func() bool { return s.Conns() == 3 }, waitFor, time.Millisecond)
	// Connections open side by side count once they outlived the grace period.
	require.Eventually(t, func() bool { return s.MaxConns() == 3 }, waitFor, time.Millisecond)
	require.Contains(t, s.Overlap(), "#1 from")
	require.Equal(t, 3, s.TotalConns())
	require.Equal(t, "3", invoke(t, cs[0], "conns", ""))

	require.NoError(t, cs[1].Close())
	require.NoError(t, cs[2].Close())
	require.Eventually(t, func() bool { return s.Conns() == 1 }, waitFor, time.Millisecond)
	require.Equal(t, "1", invoke(t, cs[0], "conns", ""))
	require.Equal(t, 3, s.MaxConns(), "MaxConns is a high-water mark")
	require.Equal(t, 3, s.TotalConns())

	d := dial(t, s)
	require.Equal(t, "2", invoke(t, d, "conns", ""))
	require.Equal(t, 4, s.TotalConns())
	require.Equal(t, 3, s.MaxConns())
}

func TestEcho(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	require.Equal(t, "hello", invoke(t, c, "echo", "hello"))
	require.Empty(t, invoke(t, c, "echo", ""))
	big := strings.Repeat("0123456789", 200_000)
	require.Equal(t, big, invoke(t, c, "echo", big))
	bin := []byte{0, 1, 2, 0xff, '\n', '"'}
	out, err := c.Invoke(testCtx(t), "echo", cluster.Message{Data: bin})
	require.NoError(t, err)
	require.Equal(t, bin, out.Data)
}

func TestIncrConcurrent(t *testing.T) {
	s := startServer(t)
	const services, workers, each = 2, 8, 50
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seen = map[int]bool{}
	)
	for range services {
		c := dial(t, s)
		for range workers {
			wg.Go(func() {
				for range each {
					out, err := c.Invoke(context.Background(), "incr", cluster.Message{})
					if err != nil {
						t.Error(err)
						return
					}
					n, err := strconv.Atoi(string(out.Data))
					if err != nil {
						t.Error(err)
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
	const total = services * workers * each
	require.Len(t, seen, total, "every incr returned a distinct value")
	for i := 1; i <= total; i++ {
		require.True(t, seen[i], "missing %d", i)
	}
	require.Equal(t, strconv.Itoa(total+1), invoke(t, dial(t, s), "incr", ""))
}

func TestServerErrors(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	_, err := c.Invoke(testCtx(t), "fail", cluster.Message{Data: []byte("because")})
	require.EqualError(t, err, "failed on purpose: because")
	_, err = c.Invoke(testCtx(t), "nope", cluster.Message{})
	require.EqualError(t, err, "unknown method nope")
	_, err = c.Invoke(testCtx(t), "sleep", cluster.Message{Data: []byte("soon")})
	require.ErrorContains(t, err, "invalid duration")
	require.Equal(t, "still fine", invoke(t, c, "echo", "still fine"), "errors leave the connection usable")
}

func TestFilesRefused(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	msg := cluster.Message{Files: []*os.File{os.Stdin}}
	_, err := c.Invoke(testCtx(t), "echo", msg)
	require.Error(t, err)
	require.Error(t, c.Publish(testCtx(t), "t", msg))
}

func TestSleep(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	require.Equal(t, "ok", invoke(t, c, "sleep", "20ms"))

	// The caller's deadline ends the call, not the connection.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Invoke(ctx, "sleep", cluster.Message{Data: []byte("1h")})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, ctx.Err())
	require.Less(t, time.Since(start), 5*time.Second)
	require.Eventually(t, func() bool { return s.Inflight() == 1 }, waitFor, time.Millisecond,
		"the server still runs the abandoned call")

	// A sleeping call does not hold up the other calls on the connection.
	ctx2, cancel2 := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Invoke(ctx2, "sleep", cluster.Message{Data: []byte("1h")})
		errc <- err
	}()
	require.Eventually(t, func() bool { return s.Inflight() == 2 }, waitFor, time.Millisecond)
	require.Equal(t, "meanwhile", invoke(t, c, "echo", "meanwhile"))
	cancel2()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(waitFor):
		t.Fatal("cancel did not end the call")
	}

	// An already-ended ctx fails at once.
	_, err = c.Invoke(ctx, "echo", cluster.Message{})
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Closing the connection ends the server's sleeps.
	require.NoError(t, c.Close())
	require.Eventually(t, func() bool { return s.Inflight() == 0 && s.Conns() == 0 }, waitFor, time.Millisecond)
}

func TestPushOrder(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	emit, got := collect()
	cancel, err := c.Subscribe(testCtx(t), "n", emit)
	require.NoError(t, err)
	defer cancel()
	require.Equal(t, 1, s.Subscribers("n"), "Subscribe returns once the server has the subscription")
	require.Equal(t, 0, s.Push("other", []byte("x")))

	const n = 1000
	for i := range n {
		require.Equal(t, 1, s.Push("n", []byte(strconv.Itoa(i))))
	}
	for i := range n {
		require.Equal(t, strconv.Itoa(i), recv(t, got))
	}
	requireNone(t, got)
}

// roundTrip waits until the server has handled every packet c sent before it.
func roundTrip(t *testing.T, c *Service) {
	t.Helper()
	require.Equal(t, "sync", invoke(t, c, "echo", "sync"))
}

func TestSubscribeRefcount(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	emit1, got1 := collect()
	emit2, got2 := collect()
	cancel1, err := c.Subscribe(testCtx(t), "t", emit1)
	require.NoError(t, err)
	cancel2, err := c.Subscribe(testCtx(t), "t", emit2)
	require.NoError(t, err)
	require.Equal(t, 1, s.Subscribers("t"), "one server subscription per topic per connection")

	require.Equal(t, 1, s.Push("t", []byte("a")))
	require.Equal(t, "a", recv(t, got1))
	require.Equal(t, "a", recv(t, got2))

	cancel1()
	cancel1() // idempotent: must not drop the other subscriber's share
	roundTrip(t, c)
	require.Equal(t, 1, s.Subscribers("t"))
	require.Equal(t, 1, s.Push("t", []byte("b")))
	require.Equal(t, "b", recv(t, got2))
	requireNone(t, got1)

	cancel2()
	roundTrip(t, c)
	require.Equal(t, 0, s.Subscribers("t"))
	require.Equal(t, 0, s.Push("t", []byte("c")))
	requireNone(t, got2)

	// Subscribe again right after the last cancel: the server ends up subscribed.
	emit3, got3 := collect()
	cancel3, err := c.Subscribe(testCtx(t), "t", emit3)
	require.NoError(t, err)
	cancel3()
	cancel3, err = c.Subscribe(testCtx(t), "t", emit3)
	require.NoError(t, err)
	defer cancel3()
	roundTrip(t, c)
	require.Equal(t, 1, s.Subscribers("t"))
	require.Equal(t, 1, s.Push("t", []byte("d")))
	require.Equal(t, "d", recv(t, got3))
}

func TestSubscribeConcurrent(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	const n = 20
	for round := range 5 {
		topic := fmt.Sprint("t", round)
		var wg sync.WaitGroup
		cancels := make([]func(), n)
		for i := range n {
			wg.Go(func() {
				cancel, err := c.Subscribe(context.Background(), topic, func(cluster.Message) {})
				if err != nil {
					t.Error(err)
					return
				}
				if i%2 == 0 {
					cancel()
				} else {
					cancels[i] = cancel
				}
			})
		}
		wg.Wait()
		roundTrip(t, c)
		require.Equal(t, 1, s.Subscribers(topic))
		for _, cancel := range cancels {
			if cancel != nil {
				cancel()
			}
		}
		roundTrip(t, c)
		require.Equal(t, 0, s.Subscribers(topic))
	}
}

func TestPublish(t *testing.T) {
	s := startServer(t)
	a, b := dial(t, s), dial(t, s)
	emitA, gotA := collect()
	emitB, gotB := collect()
	cancelA, err := a.Subscribe(testCtx(t), "cfg", emitA)
	require.NoError(t, err)
	defer cancelA()
	cancelB, err := b.Subscribe(testCtx(t), "cfg", emitB)
	require.NoError(t, err)
	defer cancelB()
	require.NoError(t, s.WaitSubscribers(testCtx(t), "cfg", 2))

	require.NoError(t, b.Publish(testCtx(t), "cfg", cluster.Message{Data: []byte("v1")}))
	// The publisher's own subscription got it before Publish returned.
	select {
	case m := <-gotB:
		require.Equal(t, "v1", m)
	default:
		t.Fatal("publisher's subscription did not get its message before Publish returned")
	}
	require.Equal(t, "v1", recv(t, gotA))

	require.NoError(t, a.Publish(testCtx(t), "nobody", cluster.Message{Data: []byte("x")}))
	requireNone(t, gotA)
	requireNone(t, gotB)
}

func TestWaitSubscribers(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = c.Subscribe(context.Background(), "late", func(cluster.Message) {})
	}()
	require.NoError(t, s.WaitSubscribers(testCtx(t), "late", 1))
	require.NoError(t, s.WaitSubscribers(testCtx(t), "anything", 0))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := s.WaitSubscribers(ctx, "late", 2)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	errc := make(chan error, 1)
	go func() { errc <- s.WaitSubscribers(context.Background(), "never", 1) }()
	require.NoError(t, s.Close())
	select {
	case err := <-errc:
		require.ErrorContains(t, err, "server closed")
	case <-time.After(waitFor):
		t.Fatal("Close did not end WaitSubscribers")
	}
}

func TestServerCloseFailsCalls(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	emit, _ := collect()
	_, err := c.Subscribe(testCtx(t), "t", emit)
	require.NoError(t, err)

	errc := make(chan error, 1)
	go func() {
		_, err := c.Invoke(context.Background(), "sleep", cluster.Message{Data: []byte("1h")})
		errc <- err
	}()
	require.Eventually(t, func() bool { return s.Inflight() == 1 }, waitFor, time.Millisecond)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
	select {
	case err := <-errc:
		require.Error(t, err)
		require.NotErrorIs(t, err, context.Canceled)
		require.ErrorContains(t, err, "connection")
	case <-time.After(waitFor):
		t.Fatal("the pending invoke hangs after the server closed")
	}
	_, err = c.Invoke(testCtx(t), "echo", cluster.Message{})
	require.Error(t, err)
	require.Error(t, c.Publish(testCtx(t), "t", cluster.Message{}))
	_, err = c.Subscribe(testCtx(t), "u", emit)
	require.Error(t, err)
	require.NoError(t, c.Close())
}

func TestServiceClose(t *testing.T) {
	s := startServer(t)
	c, err := Dial(testCtx(t), s.Addr())
	require.NoError(t, err)
	cancel, err := c.Subscribe(testCtx(t), "t", func(cluster.Message) {})
	require.NoError(t, err)
	require.NoError(t, s.WaitSubscribers(testCtx(t), "t", 1))

	errc := make(chan error, 1)
	go func() {
		_, err := c.Invoke(context.Background(), "sleep", cluster.Message{Data: []byte("1h")})
		errc <- err
	}()
	require.Eventually(t, func() bool { return s.Inflight() == 1 }, waitFor, time.Millisecond)
	require.NoError(t, c.Close())
	require.ErrorIs(t, <-errc, ErrClosed)
	require.NoError(t, c.Close(), "Close is idempotent")
	cancel() // after Close: harmless

	_, err = c.Invoke(testCtx(t), "echo", cluster.Message{})
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, c.Publish(testCtx(t), "t", cluster.Message{}), ErrClosed)
	_, err = c.Subscribe(testCtx(t), "t", func(cluster.Message) {})
	require.ErrorIs(t, err, ErrClosed)

	require.Eventually(t, func() bool { return s.Conns() == 0 && s.Subscribers("t") == 0 && s.Inflight() == 0 },
		waitFor, time.Millisecond)
}

func TestSubscribeEndedContext(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Subscribe(ctx, "t", func(cluster.Message) {})
	require.ErrorIs(t, err, context.Canceled)
	roundTrip(t, c)
	require.Equal(t, 0, s.Subscribers("t"))
}

func TestDialFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	_, err = Dial(testCtx(t), addr)
	require.Error(t, err)
	svc, err := NewService(addr)(testCtx(t))
	require.Error(t, err)
	require.Nil(t, svc, "a failed NewService returns a nil interface, not a typed nil")

	s := startServer(t)
	svc, err = NewService(s.Addr())(testCtx(t))
	require.NoError(t, err)
	var _ cluster.Service = svc
	require.NoError(t, svc.Close())
}

// TestBrokenPeer checks that garbage from a client closes its connection only.
func TestBrokenPeer(t *testing.T) {
	s := startServer(t)
	good := dial(t, s)
	raw, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer raw.Close()
	_, err = raw.Write([]byte{0, 0, 0, 3, 'x', 'y', 'z'})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.TotalConns() == 2 && s.Conns() == 1 }, waitFor, time.Millisecond)
	require.Equal(t, "ok", invoke(t, good, "echo", "ok"))

	raw2, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer raw2.Close()
	_, err = raw2.Write([]byte{0xff, 0xff, 0xff, 0xff})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.TotalConns() == 3 && s.Conns() == 1 }, waitFor, time.Millisecond)
}

// TestRegistryEntries checks the registry semantics the cluster's registration tests
// rely on: a publish is an entry of its connection until withdrawn (one per withdraw)
// or until the connection closes.
func TestRegistryEntries(t *testing.T) {
	s := startServer(t)
	a, b := dial(t, s), dial(t, s)
	var _ cluster.Withdrawer = a
	ctx := testCtx(t)
	require.NoError(t, a.Publish(ctx, "svc", cluster.Message{Data: []byte("a1")}))
	require.NoError(t, a.Publish(ctx, "svc", cluster.Message{Data: []byte("same")}))
	require.NoError(t, b.Publish(ctx, "svc", cluster.Message{Data: []byte("same")}))
	require.NoError(t, b.Publish(ctx, "other", cluster.Message{Data: []byte("b1")}))
	require.Equal(t, []string{"a1", "same", "same"}, s.Registered("svc"))
	require.Equal(t, []string{"b1"}, s.Registered("other"))

	require.NoError(t, a.Withdraw(ctx, "svc", cluster.Message{Data: []byte("same")}))
	require.Equal(t, []string{"a1", "same"}, s.Registered("svc"), "withdrawing one of two equal entries leaves the other")
	err := a.Withdraw(ctx, "svc", cluster.Message{Data: []byte("same")})
	require.ErrorContains(t, err, "was not published", "a connection withdraws only its own entries")

	require.NoError(t, b.Close())
	require.NoError(t, s.WaitRegistered(ctx, "svc", []string{"a1"}), "a closed connection's entries go with it")
	require.Equal(t, []string{}, s.Registered("other"))

	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	err = s.WaitRegistered(short, "svc", []string{"never"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, `["a1"]`)
}

func TestAClientReplacingADeadOneIsNotASecondClient(t *testing.T) {
	s := startServer(t)
	for range 5 {
		// The predecessor hangs up; its successor connects before the server has
		// necessarily noticed.
		c, err := Dial(testCtx(t), s.Addr())
		require.NoError(t, err)
		require.Equal(t, "ok", invoke(t, c, "echo", "ok"))
		require.NoError(t, c.Close())
	}
	last, err := Dial(testCtx(t), s.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { last.Close() })
	// Dial returns once connected; the server counts the connection when it accepts.
	require.Eventually(t, func() bool { return s.TotalConns() == 6 }, waitFor, time.Millisecond)
	s.Judged()
	require.Equal(t, 1, s.MaxConns(), s.Overlap())
}

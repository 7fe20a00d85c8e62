package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/frame"
)

// batchService is a BatchInvoker. Its methods: "echo" answers the request; "seq"
// records the request ("caller:n") in the order it reached the Service; "slow" does
// too, then takes a millisecond before it answers (the batch's later calls wait); "fail"
// answers an error; "skip" is left unanswered; "panic" panics; "block" waits for
// release (or for its caller's deadline). Its Invoke fails: every call, the Leader's
// own too, must come in a batch.
type batchService struct {
	release chan struct{}

	mu      sync.Mutex
	seq     []string
	batches int
	sizes   []int      // of every batch, in order
	members [][]string // the calls of every batch, in order, each as "method:data"
	blocked int        // "block" calls waiting now
	peak    int        // the most "block" calls waiting at once
	changed chan struct{}
}

func newBatchService() *batchService {
	return &batchService{release: make(chan struct{}), changed: make(chan struct{}, 1)}
}

func (s *batchService) Invoke(ctx context.Context, method string, req cluster.Message) (cluster.Message, error) {
	return cluster.Message{}, fmt.Errorf("Invoke %q: a BatchInvoker's calls come in batches", method)
}

func (s *batchService) InvokeBatch(ctx context.Context, calls []*cluster.Call) {
	members := make([]string, len(calls))
	for i, c := range calls {
		members[i] = c.Method + ":" + string(c.Req.Data)
	}
	s.mu.Lock()
	s.batches++
	s.sizes = append(s.sizes, len(calls))
	s.members = append(s.members, members)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range calls {
		switch c.Method {
		case "echo":
			c.Return(cluster.Message{Data: append([]byte(nil), c.Req.Data...)}, nil)
		case "seq":
			s.mu.Lock()
			s.seq = append(s.seq, string(c.Req.Data))
			s.mu.Unlock()
			c.Return(cluster.Message{}, nil)
		case "slow":
			s.mu.Lock()
			s.seq = append(s.seq, string(c.Req.Data))
			s.mu.Unlock()
			time.Sleep(time.Millisecond)
			c.Return(cluster.Message{}, nil)
		case "fail":
			c.Return(cluster.Message{}, errors.New("no such key"))
		case "skip":
		case "panic":
			panic("batch boom")
		case "block":
			wg.Add(1)
			go func() { // answered from another goroutine, before InvokeBatch returns
				defer wg.Done()
				s.note(+1)
				defer s.note(-1)
				select {
				case <-s.release:
					c.Return(cluster.Message{Data: []byte("released")}, nil)
				case <-c.Context().Done():
					c.Return(cluster.Message{}, c.Context().Err())
				}
			}()
		default:
			c.Return(cluster.Message{}, fmt.Errorf("unknown method %q", c.Method))
		}
	}
	wg.Wait()
}

func (s *batchService) note(d int) {
	s.mu.Lock()
	s.blocked += d
	s.peak = max(s.peak, s.blocked)
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// waitBlocked waits until n "block" calls are waiting.
func (s *batchService) waitBlocked(t *testing.T, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for {
		s.mu.Lock()
		b := s.blocked
		s.mu.Unlock()
		if b >= n {
			return
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			t.Fatalf("%d block calls waiting, want %d", b, n)
		}
	}
}

func (s *batchService) Subscribe(context.Context, string, func(cluster.Message)) (func(), error) {
	return func() {}, nil
}
func (s *batchService) Publish(context.Context, string, cluster.Message) error { return nil }
func (s *batchService) Close() error                                           { return nil }

// joinBatch starts a Leader whose Service is svc, and n Followers; it returns the
// Followers, then the Leader.
func joinBatch(t *testing.T, tc *testCluster, svc *batchService, n int, mod func(*cluster.Config)) []*cluster.Client {
	t.Helper()
	cfg := func(c *cluster.Config) {
		c.NewService = func(context.Context) (cluster.Service, error) { return svc, nil }
		if mod != nil {
			mod(c)
		}
	}
	leader := tc.join(cfg)
	require.Equal(t, cluster.RoleLeader, leader.Role().Role)
	var fs []*cluster.Client
	for range n {
		f := tc.join(cfg)
		require.Equal(t, cluster.RoleFollower, f.Role().Role)
		fs = append(fs, f)
	}
	return append(fs, leader)
}

func TestBatchesKeepEachCallersOrder(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		svc := newBatchService()
		fs := joinBatch(t, tc, svc, 3, nil) // the Leader's own calls join the batches too
		const callers, calls = 4, 50
		var wg sync.WaitGroup
		errs := make(chan error, len(fs)*callers)
		for i, f := range fs {
			for k := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := range calls {
						if _, err := f.Invoke(context.Background(), "seq", cluster.Message{Data: fmt.Appendf(nil, "%d.%d:%d", i, k, n)}); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		svc.mu.Lock()
		defer svc.mu.Unlock()
		require.Len(t, svc.seq, len(fs)*callers*calls)
		next := map[string]int{}
		for _, s := range svc.seq {
			caller, n, _ := strings.Cut(s, ":")
			i, err := strconv.Atoi(n)
			require.NoError(t, err)
			require.Equal(t, next[caller], i, "caller %s's calls reached the Service out of order", caller)
			next[caller]++
		}
		require.Positive(t, svc.batches)
	})
}

func TestBatchAnswersEachCallOnItsOwn(t *testing.T) {
	tc := newTestCluster(t)
	svc := newBatchService()
	fs := joinBatch(t, tc, svc, 1, nil)
	ctx := context.Background()
	for _, f := range fs { // a Follower, and the Leader
		out, err := f.Invoke(ctx, "echo", cluster.Message{Data: []byte("hi")})
		require.NoError(t, err)
		require.Equal(t, "hi", string(out.Data))

		_, err = f.Invoke(ctx, "fail", cluster.Message{})
		var re *cluster.RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, "no such key", re.Message)
		require.Equal(t, "fail", re.Name)

		_, err = f.Invoke(ctx, "skip", cluster.Message{})
		require.ErrorAs(t, err, &re)
		require.Contains(t, re.Message, "Call.Return")

		_, err = f.Invoke(ctx, "panic", cluster.Message{})
		require.ErrorIs(t, err, cluster.ErrServicePanic)
	}
	f := fs[0]

	// The Leader goes on: the calls of the panicking batch fail with the panic, and
	// only they.
	svc.mu.Lock()
	svc.members = nil
	svc.mu.Unlock()
	var wg sync.WaitGroup
	results := make([]error, 8)
	method := func(i int) string {
		if i == 0 {
			return "panic"
		}
		return "echo"
	}
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, results[i] = f.Invoke(ctx, method(i), cluster.Message{Data: []byte(strconv.Itoa(i))})
		}()
	}
	wg.Wait()
	svc.mu.Lock()
	var panicked []string
	for _, b := range svc.members {
		if slices.Contains(b, "panic:0") {
			panicked = b
		}
	}
	svc.mu.Unlock()
	require.NotEmpty(t, panicked, "the panicking call reached InvokeBatch")
	for i, err := range results {
		if slices.Contains(panicked, method(i)+":"+strconv.Itoa(i)) {
			require.ErrorIs(t, err, cluster.ErrServicePanic, "call %d was in the panicking batch %v", i, panicked)
		} else {
			require.NoError(t, err, "call %d was not in the panicking batch %v", i, panicked)
		}
	}
	out, err := f.Invoke(ctx, "echo", cluster.Message{Data: []byte("still")})
	require.NoError(t, err)
	require.Equal(t, "still", string(out.Data))
}

func TestBlockedBatchDoesNotStallOtherConnections(t *testing.T) {
	tc := newTestCluster(t)
	svc := newBatchService()
	fs := joinBatch(t, tc, svc, 2, nil)
	ctx := context.Background()
	blocked := make(chan error, 1)
	// fs[0], a Follower, blocks; every member's calls go on: the other Follower's, the
	// blocked one's own connection's and the Leader's.
	go func() {
		out, err := fs[0].Invoke(ctx, "block", cluster.Message{})
		if err == nil && string(out.Data) != "released" {
			err = fmt.Errorf("block answered %q", out.Data)
		}
		blocked <- err
	}()
	svc.waitBlocked(t, 1)
	for _, f := range fs {
		out, err := f.Invoke(ctx, "echo", cluster.Message{Data: []byte("past")})
		require.NoError(t, err)
		require.Equal(t, "past", string(out.Data))
	}
	close(svc.release)
	require.NoError(t, <-blocked)
}

// A connection's batched calls count against Limits.MaxInflight as its others do: the
// calls past the limit wait at the Leader for a place, even behind a blocked batch.
func TestBatchedCallsKeepTheConnectionsLimit(t *testing.T) {
	tc := newTestCluster(t)
	svc := newBatchService()
	const limit = 2
	fs := joinBatch(t, tc, svc, 1, func(c *cluster.Config) { c.Limits.MaxInflight = limit })
	follower, leader := fs[0], fs[1]
	// The Follower's connection carries nothing but these requests (no heartbeats by
	// default): each "block" invoke is a header and its method.
	const request = frame.HeaderSize + len("block")
	sentBefore, readBefore := follower.Stats().BytesOut, leader.Stats().BytesIn
	var wg sync.WaitGroup
	errs := make([]error, limit+3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = follower.Invoke(context.Background(), "block", cluster.Message{})
		}()
	}
	svc.waitBlocked(t, limit)
	// Every request was sent, and the Leader read past the limit: the first request over
	// it waits there for a place, the others behind it.
	require.Eventually(t, func() bool {
		return follower.Stats().BytesOut >= sentBefore+uint64(len(errs)*request) &&
			leader.Stats().BytesIn >= readBefore+uint64((limit+1)*request)
	}, waitTimeout, time.Millisecond, "the requests over the limit did not reach the Leader")
	// This echo, sent after them, waits behind them.
	echo := make(chan error, 1)
	go func() {
		_, err := follower.Invoke(context.Background(), "echo", cluster.Message{})
		echo <- err
	}()
	close(svc.release)
	wg.Wait()
	require.NoError(t, <-echo)
	for _, err := range errs {
		require.NoError(t, err)
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	require.LessOrEqual(t, svc.peak, limit, "more calls of one connection ran at once than Limits.MaxInflight")
}

// Requests that arrive together reach a BatchInvoker together: a Follower's five
// invokes, written in one write, are one InvokeBatch of five, answered each on its own.
func TestRequestsThatArriveTogetherAreOneBatch(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("a raw Follower here speaks over a Unix socket")
	}
	tc := newTestCluster(t)
	svc := newBatchService()
	joinBatch(t, tc, svc, 0, nil)
	c := tc.welcomedRawConn()

	var reqs []byte
	for i := uint64(1); i <= 5; i++ {
		reqs = frame.AppendFrame(reqs, frame.Header{Kind: frame.KindInvoke, ID: i}, []byte("echo"), []byte(fmt.Sprint("req ", i)))
	}
	_, err := c.Write(reqs) // one write: one read on the Leader
	require.NoError(t, err)
	answers := map[uint64]string{}
	for len(answers) < 5 {
		f, err := frame.Read(c, frame.Limits{})
		require.NoError(t, err)
		if f.Kind == frame.KindPing {
			continue
		}
		require.Equal(t, frame.KindResponse, f.Kind, "%s %s", f.Meta, f.Body)
		answers[f.ID] = string(f.Body)
	}
	for i := uint64(1); i <= 5; i++ {
		require.Equal(t, fmt.Sprint("req ", i), answers[i])
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	require.Equal(t, []int{5}, svc.sizes, "the five requests of one read, as batches")
}

// A Follower's requests reach InvokeBatch in the order it sent them, however the
// Leader's reads cut them, even while batches run long enough for another goroutine to
// take over reading the connection and requests wait for a place (Limits.MaxInflight).
func TestAFollowersRequestsReachTheBatchesInOrder(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("a raw Follower here speaks over a Unix socket")
	}
	// No batch is overtaken (one that runs past batchStall may be, and then runs beside
	// the next): the order in which the calls run is the order their batches started.
	cluster.SetBatchStall(t, time.Hour)
	tc := newTestCluster(t)
	svc := newBatchService()
	joinBatch(t, tc, svc, 0, func(c *cluster.Config) { c.Limits.MaxInflight = 2 })
	c := tc.welcomedRawConn()

	const n = 2000
	answered := make(chan error, 1)
	go func() {
		for seen := 0; seen < n; {
			f, err := frame.Read(c, frame.Limits{})
			switch {
			case err != nil:
				answered <- err
				return
			case f.Kind == frame.KindResponse:
				seen++
			case f.Kind != frame.KindPing:
				answered <- fmt.Errorf("%s frame: %s %s", f.Kind, f.Meta, f.Body)
				return
			}
		}
		answered <- nil
	}()
	// Writes of one to six frames: mostly quick invokes, some slow ones, some oneway
	// requests (which are not batched: each makes the reader hand its held requests
	// on first), each with a method name of its own (which the reader keeps a table of).
	rng := rand.New(rand.NewPCG(1, 2))
	for id := uint64(1); id <= n; {
		var b []byte
		for k := rng.IntN(6) + 1; k > 0 && id <= n; k-- {
			switch r := rng.IntN(20); {
			case r == 0:
				b = frame.AppendFrame(b, frame.Header{Kind: frame.KindOneway}, fmt.Appendf(nil, "name %d", id), nil)
			case r == 1:
				b = frame.AppendFrame(b, frame.Header{Kind: frame.KindInvoke, ID: id}, []byte("slow"), fmt.Append(nil, id))
				id++
			default:
				b = frame.AppendFrame(b, frame.Header{Kind: frame.KindInvoke, ID: id}, []byte("seq"), fmt.Append(nil, id))
				id++
			}
		}
		_, err := c.Write(b)
		require.NoError(t, err)
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
		}
	}
	require.NoError(t, <-answered, "every request is answered")
	svc.mu.Lock()
	defer svc.mu.Unlock()
	require.Len(t, svc.seq, n)
	for i, s := range svc.seq {
		require.Equal(t, strconv.Itoa(i+1), s, "the requests reached the Service in this order: ... %v ...", svc.seq[max(i-3, 0):min(i+4, n)])
	}
}

// plainService is batchService without InvokeBatch: its calls come one by one.
type plainService struct{ *batchService }

func (s plainService) Invoke(ctx context.Context, method string, req cluster.Message) (cluster.Message, error) {
	c := cluster.NewCall(ctx, method, req)
	s.InvokeBatch(ctx, []*cluster.Call{c})
	return c.Result()
}

// A request whose caller's deadline passes while it waits at the Leader for a place
// (Limits.MaxInflight) is answered as timed out and never reaches the Service, batched
// or not: its caller has given up on it.
func TestARequestThatWaitedPastItsDeadlineDoesNotRun(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprint("batched=", batched), func(t *testing.T) {
			tc := newTestCluster(t)
			svc := newBatchService()
			var s cluster.Service = plainService{svc}
			if batched {
				s = svc
			}
			cfg := func(c *cluster.Config) {
				c.NewService = func(context.Context) (cluster.Service, error) { return s, nil }
				c.Limits.MaxInflight = 1
			}
			leader := tc.join(cfg)
			require.Equal(t, cluster.RoleLeader, leader.Role().Role)
			f := tc.join(cfg)
			require.Equal(t, cluster.RoleFollower, f.Role().Role)

			blocked := make(chan error, 1)
			go func() {
				_, err := f.Invoke(context.Background(), "block", cluster.Message{})
				blocked <- err
			}()
			svc.waitBlocked(t, 1) // the connection's one place is taken
			const timeout = 20 * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			_, err := f.Invoke(ctx, "seq", cluster.Message{Data: []byte("late")})
			require.ErrorIs(t, err, cluster.ErrTimeout)
			// The Leader counts the caller's time from when it read the request, which
			// may be later than when it was sent: once it has read it, let the time the
			// request carries pass there too, many times over.
			sent := f.Stats().BytesOut
			require.Eventually(t, func() bool { return leader.Stats().BytesIn >= sent }, waitTimeout, time.Millisecond)
			time.Sleep(10 * timeout)
			close(svc.release)
			require.NoError(t, <-blocked)
			// A call after it: the Leader has handled the late request by its answer.
			_, err = f.Invoke(context.Background(), "seq", cluster.Message{Data: []byte("next")})
			require.NoError(t, err)
			svc.mu.Lock()
			defer svc.mu.Unlock()
			require.Equal(t, []string{"next"}, svc.seq, "the request whose caller gave up reached the Service")
		})
	}
}

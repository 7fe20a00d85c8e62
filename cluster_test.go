package cluster_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/internal/upstream"
	"github.com/cluster-client-go/cluster/lock"
)

// join starts an in-process member of tc. Several members in one process work like
// separate processes: each has its own lock file description, so flock arbitrates.
func (tc *testCluster) join(mod func(*cluster.Config)) *cluster.Client {
	tc.t.Helper()
	cfg := cluster.Config{
		Name:       tc.name,
		Dir:        tc.dir,
		NewService: upstream.NewService(tc.upstream.Addr()),
		Logger:     slog.New(slog.DiscardHandler),
	}
	tc.apply(&cfg)
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := cluster.Join(ctx, cfg)
	require.NoError(tc.t, err)
	tc.t.Cleanup(func() { c.Close() })
	return c
}

func TestJoinRejectsBadConfig(t *testing.T) {
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	newSvc := upstream.NewService("127.0.0.1:1")
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	open := filepath.Join(dir, "open")
	require.NoError(t, os.Mkdir(open, 0o700))
	require.NoError(t, os.Chmod(open, 0o777))
	long := filepath.Join(dir, strings.Repeat("d", 90))

	for _, tt := range []struct {
		name  string
		cfg   cluster.Config
		field string
	}{
		{"empty name", cluster.Config{Dir: dir, NewService: newSvc}, "Name"},
		{"slash in name", cluster.Config{Name: "a/b", Dir: dir, NewService: newSvc}, "Name"},
		{"dot name", cluster.Config{Name: "..", Dir: dir, NewService: newSvc}, "Name"},
		{"no service", cluster.Config{Name: "x", Dir: dir}, "NewService"},
		{"dir is a file", cluster.Config{Name: "x", Dir: file, NewService: newSvc}, "Dir"},
		{"world-writable dir", cluster.Config{Name: "x", Dir: open, NewService: newSvc}, "Dir"},
		{"socket path too long", cluster.Config{Name: strings.Repeat("n", 30), Dir: long, NewService: newSvc}, "Dir"},
		{"bad lead policy", cluster.Config{Name: "x", Dir: dir, NewService: newSvc, Lead: 9}, "Lead"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := cluster.Join(context.Background(), tt.cfg)
			require.Nil(t, c)
			require.ErrorIs(t, err, cluster.ErrConfig)
			require.Contains(t, err.Error(), tt.field)
		})
	}
	// The causes stay matchable.
	_, err = cluster.Join(context.Background(), cluster.Config{Name: "x", Dir: open, NewService: newSvc})
	require.ErrorIs(t, err, lock.ErrUnsafeDir)
	// The long-path error names the path's length and the limit.
	_, err = cluster.Join(context.Background(), cluster.Config{Name: strings.Repeat("n", 30), Dir: long, NewService: newSvc})
	require.ErrorContains(t, err, "limit")
}

func TestJoinCreatesAPrivateDir(t *testing.T) {
	tc := newTestCluster(t)
	tc.dir = filepath.Join(tc.dir, "nested", "run")
	c := tc.join(nil)
	fi, err := os.Stat(tc.dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	require.Equal(t, cluster.RoleLeader, c.Role().Role)
	si, err := os.Stat(filepath.Join(tc.dir, tc.name+".sock"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), si.Mode().Perm(), "the socket must be owner-only from birth")
}

func TestInProcessLeaderAndFollowers(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		var rolesMu sync.Mutex
		var roles []cluster.RoleInfo
		l := tc.join(func(c *cluster.Config) {
			c.OnRoleChange = func(r cluster.RoleInfo) {
				rolesMu.Lock()
				roles = append(roles, r)
				rolesMu.Unlock()
			}
		})
		f1 := tc.join(nil)
		f2 := tc.join(nil)
		require.Equal(t, cluster.RoleLeader, l.Role().Role)
		require.Equal(t, cluster.RoleFollower, f1.Role().Role)
		require.Equal(t, l.Role().Term, f1.Role().Term)
		require.Equal(t, os.Getpid(), f2.Role().LeaderPID)
		require.Eventually(t, func() bool { return l.Stats().Followers == 2 }, waitTimeout, time.Millisecond)
		// OnRoleChange runs on a goroutine of its own, which may not have run yet.
		var first cluster.RoleInfo
		require.Eventually(t, func() bool {
			rolesMu.Lock()
			defer rolesMu.Unlock()
			if len(roles) > 0 {
				first = roles[0]
			}
			return len(roles) > 0
		}, waitTimeout, time.Millisecond)
		require.Equal(t, cluster.RoleLeader, first.Role)

		ctx := context.Background()
		for _, c := range []*cluster.Client{l, f1, f2} {
			out, err := c.Invoke(ctx, "echo", cluster.Message{Data: []byte("hi")})
			require.NoError(t, err)
			require.Equal(t, "hi", string(out.Data))

			_, err = c.Invoke(ctx, "fail", cluster.Message{Data: []byte("x")})
			var re *cluster.RemoteError
			require.ErrorAs(t, err, &re)
			require.Equal(t, "failed on purpose: x", re.Message)
			require.Equal(t, "invoke", re.Op)

			tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			_, err = c.Invoke(tctx, "sleep", cluster.Message{Data: []byte("1m")})
			cancel()
			require.ErrorIs(t, err, cluster.ErrTimeout)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			require.True(t, ne.Timeout())

			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err = c.Invoke(cctx, "echo", cluster.Message{})
			require.ErrorIs(t, err, context.Canceled)
		}
		require.Equal(t, 1, tc.upstream.MaxConns())
		st := f1.Stats()
		require.Equal(t, tc.transport, st.Transport.String())
		require.GreaterOrEqual(t, st.Calls, uint64(4))
		require.GreaterOrEqual(t, st.Timeouts, uint64(1))
	})
}

func TestCallTimeoutAppliesWithoutADeadline(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		tc.join(nil)
		f := tc.join(func(c *cluster.Config) { c.CallTimeout = 50 * time.Millisecond })
		_, err := f.Invoke(context.Background(), "sleep", cluster.Message{Data: []byte("1m")})
		require.ErrorIs(t, err, cluster.ErrTimeout)
	})
}

func TestOversizedPayloadIsRefusedBeforeSending(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		tc.join(func(c *cluster.Config) { c.MaxBody = 1024 })
		f := tc.join(nil)
		_, err := f.Invoke(context.Background(), "echo", cluster.Message{Data: make([]byte, 2048)})
		require.ErrorIs(t, err, cluster.ErrTooLarge)
		require.EqualError(t, err, `cluster: invoke "echo": the request is 2048 bytes, over the receiver's limit of 1024 `+
			`(Config.MaxBody: raise it on every member, or send large payloads as a Message.Blob)`)
		// The connection is intact.
		_, err = f.Invoke(context.Background(), "echo", cluster.Message{Data: []byte("ok")})
		require.NoError(t, err)
	})
}

func TestSubscriptionsInProcess(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		l := tc.join(nil)
		f := tc.join(nil)
		ctx := context.Background()
		got := make(chan string, 100)
		var subs []*cluster.Subscription
		for _, c := range []*cluster.Client{l, f, f} {
			s, err := c.Subscribe(ctx, "t", func(m cluster.Message) { got <- string(m.Data) })
			require.NoError(t, err)
			subs = append(subs, s)
		}
		require.Equal(t, 1, tc.upstream.Subscribers("t"))
		tc.upstream.Push("t", []byte("1"))
		for range 3 {
			require.Equal(t, "1", recv(t, got))
		}
		// Late subscribers on either side get the latest at once.
		late := make(chan string, 1)
		s, err := l.Subscribe(ctx, "t", func(m cluster.Message) { late <- string(m.Data) })
		require.NoError(t, err)
		require.Equal(t, "1", recv(t, late))
		require.NoError(t, s.Close())
		require.NoError(t, s.Close(), "Close is idempotent")
		for _, s := range subs {
			require.NoError(t, s.Close())
		}
		require.Eventually(t, func() bool { return tc.upstream.Subscribers("t") == 0 }, waitTimeout, time.Millisecond)
		require.Equal(t, 0, f.Stats().Subscriptions)
	})
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(waitTimeout):
		t.Fatal("no message")
		return ""
	}
}

func TestSlowSubscriberDropsOldestAndStallsNobody(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		tc.join(nil)
		f := tc.join(func(c *cluster.Config) { c.SubscriptionBuffer = 4 })
		other := tc.join(nil)
		ctx := context.Background()
		release := make(chan struct{})
		var releaseOnce sync.Once
		t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
		var slowMu sync.Mutex
		var slow []string
		entered := make(chan struct{}, 1)
		_, err := f.Subscribe(ctx, "t", func(m cluster.Message) {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
			slowMu.Lock()
			slow = append(slow, string(m.Data))
			slowMu.Unlock()
		})
		require.NoError(t, err)
		// A subscriber elsewhere on the host (default buffer) is not held up by it.
		fast := make(chan string, 1000)
		_, err = other.Subscribe(ctx, "t", func(m cluster.Message) { fast <- string(m.Data) })
		require.NoError(t, err)
		// Park the slow callback on a first message, so the queue's contents are exact.
		tc.upstream.Push("t", []byte("warm"))
		require.Equal(t, "warm", recv(t, fast))
		select {
		case <-entered:
		case <-time.After(waitTimeout):
			t.Fatal("the slow callback never ran")
		}
		for i := range 100 {
			tc.upstream.Push("t", []byte(strconv.Itoa(i)))
		}
		for i := range 100 {
			require.Equal(t, strconv.Itoa(i), recv(t, fast), "the fast subscriber must get every message in order")
		}
		// All 100 reach the slow member while its callback is parked: the queue
		// (4) keeps the newest and the other 96 are dropped, oldest first.
		require.Eventually(t, func() bool { return f.Stats().Dropped == 96 }, waitTimeout, time.Millisecond)
		releaseOnce.Do(func() { close(release) })
		require.Eventually(t, func() bool {
			slowMu.Lock()
			defer slowMu.Unlock()
			return len(slow) == 5
		}, waitTimeout, time.Millisecond)
		slowMu.Lock()
		got := slices.Clone(slow)
		slowMu.Unlock()
		require.Equal(t, []string{"warm", "96", "97", "98", "99"}, got, "the slow subscriber keeps the newest messages")
		require.Equal(t, uint64(96), f.Stats().Dropped)
	})
}

func TestCloseIsIdempotentAndEndsCalls(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		l := tc.join(nil)
		f := tc.join(nil)
		require.NoError(t, f.Close())
		require.NoError(t, f.Close())
		_, err := f.Invoke(context.Background(), "echo", cluster.Message{})
		require.ErrorIs(t, err, cluster.ErrClosed)
		_, err = f.Subscribe(context.Background(), "t", func(cluster.Message) {})
		require.ErrorIs(t, err, cluster.ErrClosed)
		require.Equal(t, cluster.RoleClosed, f.Role().Role)
		require.NoError(t, l.Close())
		_, err = l.Invoke(context.Background(), "echo", cluster.Message{})
		require.ErrorIs(t, err, cluster.ErrClosed)
	})
}

func TestInProcessHandoverKeepsSubscriptions(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		l := tc.join(nil)
		f1 := tc.join(nil)
		f2 := tc.join(nil)
		got1, got2 := make(chan string, 10), make(chan string, 10)
		_, err := f1.Subscribe(context.Background(), "t", func(m cluster.Message) { got1 <- string(m.Data) })
		require.NoError(t, err)
		_, err = f2.Subscribe(context.Background(), "t", func(m cluster.Message) { got2 <- string(m.Data) })
		require.NoError(t, err)
		term := l.Role().Term
		require.NoError(t, l.Close())
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		// Calls made during the handover wait for the next Leader.
		_, err = f1.Invoke(ctx, "echo", cluster.Message{Data: []byte("x")})
		require.NoError(t, err)
		tc.awaitNewSubscriber(t, "t", 2)
		require.Equal(t, 1, tc.upstream.Push("t", []byte("after")))
		require.Equal(t, "after", recv(t, got1))
		require.Equal(t, "after", recv(t, got2))
		var newLeader *cluster.Client
		for _, c := range []*cluster.Client{f1, f2} {
			if c.Role().Role == cluster.RoleLeader {
				newLeader = c
			}
		}
		require.NotNil(t, newLeader)
		require.Greater(t, newLeader.Role().Term, term)
		require.Eventually(t, func() bool {
			return f1.Role().Term == newLeader.Role().Term && f2.Role().Term == newLeader.Role().Term
		}, waitTimeout, time.Millisecond)
		// Both lost a Leader once: the one that took over and the one that followed it.
		require.Equal(t, uint64(1), f1.Stats().Failovers)
		require.Equal(t, uint64(1), f2.Stats().Failovers)
	})
}

// rawConn dials the Leader's socket directly, as a hostile or broken peer would.
func (tc *testCluster) rawConn() net.Conn {
	tc.t.Helper()
	c, err := net.Dial("unix", filepath.Join(tc.dir, tc.name+".sock"))
	require.NoError(tc.t, err)
	tc.t.Cleanup(func() { c.Close() })
	return c
}

// welcomedRawConn is rawConn after a Follower's handshake, with a deadline of
// waitTimeout for all that follows.
func (tc *testCluster) welcomedRawConn() net.Conn {
	tc.t.Helper()
	c := tc.rawConn()
	require.NoError(tc.t, c.SetDeadline(time.Now().Add(waitTimeout)))
	_, err := c.Write(hello(tc.name))
	require.NoError(tc.t, err)
	w, err := frame.Read(c, frame.Limits{})
	require.NoError(tc.t, err)
	require.Equal(tc.t, frame.KindWelcome, w.Kind, "%s %s", w.Meta, w.Body)
	return c
}

func hello(name string) []byte {
	h := frame.Hello{MinVersion: frame.Version, MaxVersion: frame.Version, PID: 1, MaxBody: 1 << 20, Name: name}
	return frame.AppendFrame(nil, frame.Header{Kind: frame.KindHello}, nil, h.Append(nil))
}

// syncBuffer is a log sink tests can read while the Leader writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestHostilePeersDoNotDisturbTheLeader(t *testing.T) {
	tc := newTestCluster(t)
	var logs syncBuffer
	leader := tc.join(func(c *cluster.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	healthy := tc.join(nil)
	healthySub := make(chan string, 10)
	_, err := healthy.Subscribe(context.Background(), "t", func(m cluster.Message) { healthySub <- string(m.Data) })
	require.NoError(t, err)

	oversized := make([]byte, frame.HeaderSize)
	(&frame.Header{Version: frame.Version, Kind: frame.KindInvoke, ID: 1, BodyLen: 1 << 31}).Put(oversized)
	wrongVersion := hello(tc.name)
	wrongVersion[0] = 99

	for _, tt := range []struct {
		name string
		send func(t *testing.T, c net.Conn)
		// wantCode is the error frame the Leader closes the connection with ("": it
		// cannot answer, or the peer cannot read it).
		wantCode string
		// wantKind is the kind under which the Leader counts (and logs, rate-limited)
		// the refusal: see Stats.Refused.
		wantKind string
	}{
		{"garbage before hello", func(t *testing.T, c net.Conn) {
			c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("z", 64)))
		}, frame.CodeVersion, "handshake"},
		{"wrong version", func(t *testing.T, c net.Conn) { c.Write(wrongVersion) }, frame.CodeVersion, "handshake"},
		{"wrong cluster name", func(t *testing.T, c net.Conn) { c.Write(hello("other")) }, frame.CodeProtocol, "handshake"},
		{"half a hello", func(t *testing.T, c net.Conn) { c.Write(hello(tc.name)[:30]) }, "", "handshake"},
		{"oversized length after hello", func(t *testing.T, c net.Conn) { c.Write(hello(tc.name)); c.Write(oversized) }, frame.CodeTooLarge, "too-large"},
		{"garbage after hello", func(t *testing.T, c net.Conn) { c.Write(hello(tc.name)); c.Write([]byte(strings.Repeat("\xff", 100))) }, frame.CodeVersion, "protocol"},
		{"half a frame after hello", func(t *testing.T, c net.Conn) {
			c.Write(hello(tc.name))
			c.Write(frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 1}, []byte("echo"), make([]byte, 100))[:50])
		}, "", "protocol"},
		{"response frame from a follower", func(t *testing.T, c net.Conn) {
			c.Write(hello(tc.name))
			c.Write(frame.AppendFrame(nil, frame.Header{Kind: frame.KindResponse, ID: 1}, nil, nil))
		}, frame.CodeProtocol, "protocol"},
		{"too many fds declared", func(t *testing.T, c net.Conn) {
			c.Write(hello(tc.name))
			b := frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 1}, []byte("echo"), nil)
			b[3] = 200
			c.Write(b)
		}, frame.CodeProtocol, "protocol"},
		{"unsealed memfd passed as a blob", func(t *testing.T, c net.Conn) {
			c.Write(hello(tc.name))
			f := unsealedMemfd(t, "the sender could still change this")
			defer f.Close()
			b := frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, Flags: frame.FlagBlob, FDs: 1, ID: 1}, []byte("echo"), nil)
			writeWithFile(t, c, b, f)
		}, "", "protocol"},
		{"name over MaxNameLen", func(t *testing.T, c net.Conn) {
			c.Write(hello(tc.name))
			c.Write(frame.AppendFrame(nil, frame.Header{Kind: frame.KindSubscribe, ID: 1}, []byte(strings.Repeat("t", 64<<10)), nil))
		}, frame.CodeTooLarge, "too-large"},
		{"a request id already in flight", func(t *testing.T, c net.Conn) {
			c.Write(hello(tc.name))
			sleep := frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 7}, []byte("sleep"), []byte("1s"))
			c.Write(append(sleep, sleep...))
		}, frame.CodeProtocol, "protocol"},
		{"an observer that invokes", func(t *testing.T, c net.Conn) {
			h := frame.Hello{MinVersion: frame.Version, MaxVersion: frame.Version, PID: 1, MaxBody: 1 << 20, Name: tc.name, Role: frame.RoleObserver}
			c.Write(frame.AppendFrame(nil, frame.Header{Kind: frame.KindHello}, nil, h.Append(nil)))
			c.Write(frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 1}, []byte("echo"), nil))
		}, frame.CodeProtocol, "protocol"},
		{"empty method name", func(t *testing.T, c net.Conn) {
			c.Write(hello(tc.name))
			c.Write(frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 1}, nil, nil))
		}, frame.CodeProtocol, "protocol"},
		{"descriptor passed with a subscribe", func(t *testing.T, c net.Conn) {
			c.Write(hello(tc.name))
			b := frame.AppendFrame(nil, frame.Header{Kind: frame.KindSubscribe, FDs: 1, ID: 1}, []byte("t"), nil)
			writeWithFile(t, c, b, os.Stdin)
		}, "", "protocol"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := leader.Stats().Refused
			c := tc.rawConn()
			tt.send(t, c)
			if strings.HasPrefix(tt.name, "half") {
				c.(*net.UnixConn).CloseWrite()
			}
			// The Leader closes the connection, after an error frame where it can say why.
			require.NoError(t, c.SetReadDeadline(time.Now().Add(waitTimeout)))
			var frames []frame.Frame
			for {
				f, err := frame.Read(c, frame.Limits{})
				if err != nil {
					require.NotErrorIs(t, err, os.ErrDeadlineExceeded, "the leader did not close a hostile connection")
					break
				}
				frames = append(frames, f)
			}
			if tt.wantCode != "" {
				require.NotEmpty(t, frames)
				last := frames[len(frames)-1]
				require.Equal(t, frame.KindError, last.Kind)
				require.Equal(t, tt.wantCode, string(last.Meta), string(last.Body))
			}
			// The Leader counted the refusal, and logged it (the first of each kind at
			// once, the rest in a summary).
			require.Eventually(t, func() bool {
				return leader.Stats().Refused[tt.wantKind] > before[tt.wantKind] && strings.Contains(logs.String(), "limit="+tt.wantKind)
			}, waitTimeout, time.Millisecond, "the leader did not count and log a %q refusal; refused so far: %v", tt.wantKind, leader.Stats().Refused)
			// The healthy Follower is still served, calls and subscriptions alike.
			out, err := healthy.Invoke(context.Background(), "echo", cluster.Message{Data: []byte(tt.name)})
			require.NoError(t, err)
			require.Equal(t, tt.name, string(out.Data))
			tc.upstream.Push("t", []byte(tt.name))
			require.Equal(t, tt.name, recv(t, healthySub))
		})
	}
}

func TestTypedMethodsAndTopics(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		tc.join(nil)
		f := tc.join(nil)
		type point struct{ X, Y int }
		echo := cluster.Method[point, point]{Name: "echo"}
		p, err := echo.Invoke(context.Background(), f, point{1, 2})
		require.NoError(t, err)
		require.Equal(t, point{1, 2}, p)

		topic := cluster.Topic[point]{Name: "points"}
		got := make(chan point, 1)
		_, err = topic.Subscribe(context.Background(), f, func(p point) { got <- p })
		require.NoError(t, err)
		require.NoError(t, topic.Publish(context.Background(), f, point{3, 4}))
		select {
		case p := <-got:
			require.Equal(t, point{3, 4}, p)
		case <-time.After(waitTimeout):
			t.Fatal("no typed message")
		}
		// A response that does not decode is an error, not a zero value.
		bad := cluster.Method[point, int]{Name: "echo"}
		_, err = bad.Invoke(context.Background(), f, point{1, 2})
		require.ErrorContains(t, err, "decoding the response")
	})
}

// TestABlockedServiceCallHoldsUpNoOtherCall: the Leader answers a lone quick request on
// the connection's reader; a Service call that blocks there must not hold up the
// Follower's other calls (another goroutine takes over reading).
func TestABlockedServiceCallHoldsUpNoOtherCall(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		tc.join(nil)
		f := tc.join(nil)
		ctx := context.Background()
		for range 10 { // quick calls: answered where they were read
			_, err := f.Invoke(ctx, "echo", cluster.Message{Data: []byte("warm")})
			require.NoError(t, err)
		}
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		slept := make(chan error, 1)
		go func() {
			_, err := f.Invoke(sctx, "sleep", cluster.Message{Data: []byte("10m")})
			slept <- err
		}()
		require.Eventually(t, func() bool { return tc.upstream.Inflight() == 1 }, waitTimeout, time.Millisecond,
			"the blocking call reaches the Service")
		for i := range 20 {
			out, err := f.Invoke(ctx, "echo", cluster.Message{Data: []byte{byte(i)}})
			require.NoError(t, err, "a call behind a blocked one")
			require.Equal(t, []byte{byte(i)}, out.Data)
		}
		select {
		case err := <-slept:
			t.Fatalf("the blocking call returned early: %v", err)
		default:
		}
		cancel()
		require.ErrorIs(t, <-slept, context.Canceled)
	})
}

// slowSubscribeService is a Service whose Subscribe of "slow" blocks until release is
// closed.
type slowSubscribeService struct {
	cluster.Service
	entered chan struct{} // closed when Subscribe of "slow" began
	release chan struct{}
	once    sync.Once
}

func (s *slowSubscribeService) Subscribe(ctx context.Context, topic string, emit func(cluster.Message)) (func(), error) {
	if topic == "slow" {
		s.once.Do(func() { close(s.entered) })
		<-s.release
	}
	return s.Service.Subscribe(ctx, topic, emit)
}

func TestABlockedServiceSubscribeHoldsUpNoOneElse(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		svc := &slowSubscribeService{entered: make(chan struct{}), release: make(chan struct{})}
		released := sync.OnceFunc(func() { close(svc.release) })
		defer released()
		local := func(cfg *cluster.Config) {
			next := cfg.NewService
			cfg.NewService = func(ctx context.Context) (cluster.Service, error) {
				s, err := next(ctx)
				svc.Service = s
				return svc, err
			}
		}
		l := tc.join(local)
		require.Equal(t, cluster.RoleLeader, l.Role().Role)
		f1 := tc.join(local)
		ctx := context.Background()
		slow := make(chan string, 10)
		subscribed := make(chan error, 1)
		var slowSub *cluster.Subscription
		go func() {
			var err error
			slowSub, err = f1.Subscribe(ctx, "slow", func(m cluster.Message) { slow <- string(m.Data) })
			subscribed <- err
		}()
		select {
		case <-svc.entered:
		case <-time.After(waitTimeout):
			t.Fatal("Service.Subscribe of \"slow\" was not called")
		}

		// While it blocks: a Follower joins, subscribes and gets messages, calls are
		// answered, the Leader reports, a Follower leaves.
		f2 := tc.join(local)
		fast := make(chan string, 10)
		_, err := f2.Subscribe(ctx, "fast", func(m cluster.Message) { fast <- string(m.Data) })
		require.NoError(t, err)
		require.NoError(t, l.Publish(ctx, "fast", cluster.Message{Data: []byte("f1")}))
		require.Equal(t, "f1", recv(t, fast))
		for _, c := range []*cluster.Client{f1, f2, l} {
			out, err := c.Invoke(ctx, "echo", cluster.Message{Data: []byte("hi")})
			require.NoError(t, err)
			require.Equal(t, "hi", string(out.Data))
		}
		st, err := f2.LeaderStatus(ctx)
		require.NoError(t, err)
		require.Len(t, st.Followers, 2)
		require.NoError(t, f2.Close())
		require.Eventually(t, func() bool {
			st, err := l.LeaderStatus(ctx)
			return err == nil && len(st.Followers) == 1
		}, waitTimeout, time.Millisecond, "the Follower that left is gone from the Leader's status")
		select {
		case err := <-subscribed:
			t.Fatalf("Subscribe of \"slow\" returned while the Service blocked: %v", err)
		default:
		}

		// Released: the blocked subscription completes and works like any other.
		released()
		require.NoError(t, <-subscribed)
		require.NoError(t, l.Publish(ctx, "slow", cluster.Message{Data: []byte("s1")}))
		require.Equal(t, "s1", recv(t, slow))
		require.NoError(t, l.Publish(ctx, "fast", cluster.Message{Data: []byte("f2")}))
		require.NoError(t, slowSub.Close())
		st, err = l.LeaderStatus(ctx)
		require.NoError(t, err)
		require.Len(t, st.Followers, 1)
		require.Len(t, st.Topics, 0, "no subscriber is left on the host: %+v", st.Topics)
	})
}

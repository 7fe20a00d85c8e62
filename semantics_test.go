package cluster_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
)

// collector gathers what callbacks received, by subscriber.
type collector struct {
	mu  sync.Mutex
	got map[string][]string
}

func (c *collector) fn(name string) func(cluster.Message) {
	return func(m cluster.Message) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.got[name] = append(c.got[name], string(m.Data))
	}
}

func (c *collector) of(name string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got[name])
}

func (c *collector) total(names ...string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, name := range names {
		n += len(c.got[name])
	}
	return n
}

func TestSharedSubscriptionDeliversEachMessageOnce(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		l := tc.join(nil)
		f1 := tc.join(nil)
		f2 := tc.join(nil)
		ctx := context.Background()
		col := &collector{got: map[string][]string{}}
		for _, s := range []struct {
			name string
			c    *cluster.Client
		}{{"f1a", f1}, {"f1b", f1}, {"f2", f2}} {
			sub, err := s.c.Subscribe(ctx, "jobs", col.fn(s.name), cluster.Shared())
			require.NoError(t, err)
			require.True(t, sub.IsShared())
		}
		// A broadcast subscriber of the same topic still sees everything.
		_, err := l.Subscribe(ctx, "jobs", col.fn("all"))
		require.NoError(t, err)
		require.Equal(t, 1, tc.upstream.Subscribers("jobs"), "one upstream subscription for both kinds")

		const n = 40
		var want []string
		for i := range n {
			want = append(want, strconv.Itoa(i))
			tc.upstream.Push("jobs", []byte(strconv.Itoa(i)))
		}
		workers := []string{"f1a", "f1b", "f2"}
		require.Eventually(t, func() bool { return col.total(workers...) == n && col.total("all") == n }, waitTimeout, time.Millisecond)
		require.Equal(t, want, col.of("all"))
		var union []string
		for _, w := range workers {
			got := col.of(w)
			require.NotEmpty(t, got, "worker %s got no work", w)
			require.True(t, slices.IsSortedFunc(got, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y }), "a worker sees its share in order: %v", got)
			union = append(union, got...)
		}
		slices.SortFunc(union, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
		require.Equal(t, want, union, "every message went to exactly one shared subscriber")
		// The Leader takes turns between the two processes.
		require.Equal(t, n/2, col.total("f1a", "f1b"))
		require.Equal(t, n/2, col.total("f2"))

		// A late shared subscriber is not replayed the latest message (it was handled).
		late, err := l.Subscribe(ctx, "jobs", col.fn("late"), cluster.Shared())
		require.NoError(t, err)
		tc.upstream.Push("jobs", []byte("next"))
		require.Eventually(t, func() bool { return col.total("all") == n+1 }, waitTimeout, time.Millisecond)
		require.Eventually(t, func() bool { return col.total(append(workers, "late")...) == n+1 }, waitTimeout, time.Millisecond)
		require.NotContains(t, col.of("late"), strconv.Itoa(n-1))
		require.NoError(t, late.Close())
	})
}

func TestSharedSubscribersOfADeadProcessGetNoMore(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		ps := tc.startMembers(3)
		leader, _ := leaderOf(t, ps)
		var workers []*proc
		subOf := map[*proc]int{}
		for _, p := range ps {
			if p != leader {
				r := p.do(command{Op: "subscribe", Name: "jobs", Shared: true})
				require.Empty(t, r.Err)
				workers = append(workers, p)
				subOf[p] = r.ID
			}
		}
		require.NoError(t, tc.upstream.WaitSubscribers(context.Background(), "jobs", 1))
		workers[0].Kill()
		// The Leader drops the dead process's sink when its connection ends; from then on
		// every message goes to the survivor.
		require.Eventually(t, func() bool {
			var st cluster.Stats
			require.NoError(t, jsonUnmarshal(leader.do(command{Op: "stats"}).Data, &st))
			return st.Followers == 1
		}, waitTimeout, time.Millisecond)
		before := len(workers[1].messages(subOf[workers[1]]))
		for i := range 10 {
			tc.upstream.Push("jobs", []byte(strconv.Itoa(i)))
		}
		workers[1].waitMessage(subOf[workers[1]], "9")
		got := workers[1].messages(subOf[workers[1]])[before:]
		require.Equal(t, []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, got)
	})
}

func TestSubscriptionFirstWaitsForAValue(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		tc.join(nil)
		f := tc.join(nil)
		ctx := context.Background()
		got := make(chan string, 10)
		sub, err := f.Subscribe(ctx, "cfg", func(m cluster.Message) { got <- string(m.Data) })
		require.NoError(t, err)

		// Nothing published yet: First times out, and the subscription stays.
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, err = sub.First(short)
		cancel()
		require.ErrorIs(t, err, cluster.ErrTimeout)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		tc.upstream.Push("cfg", []byte("v1"))
		m, err := sub.First(ctx)
		require.NoError(t, err)
		require.Equal(t, "v1", string(m.Data))
		require.Equal(t, "v1", recv(t, got), "the callback gets the first message too")
		tc.upstream.Push("cfg", []byte("v2"))
		require.Equal(t, "v2", recv(t, got))
		m, err = sub.First(ctx)
		require.NoError(t, err)
		require.Equal(t, "v1", string(m.Data), "First keeps reporting the first message")

		// A late subscriber's first message is the latest value, at once.
		late, err := f.Subscribe(ctx, "cfg", func(cluster.Message) {})
		require.NoError(t, err)
		expired, cancel := context.WithCancel(ctx)
		cancel()
		m, err = late.First(expired)
		require.NoError(t, err, "a message already here wins over an ended ctx")
		require.Equal(t, "v2", string(m.Data))

		// Closed before anything arrived: First says so.
		empty, err := f.Subscribe(ctx, "empty", func(cluster.Message) {})
		require.NoError(t, err)
		errc := make(chan error, 1)
		go func() {
			_, err := empty.First(ctx)
			errc <- err
		}()
		require.NoError(t, empty.Close())
		select {
		case err := <-errc:
			require.ErrorIs(t, err, cluster.ErrClosed)
		case <-time.After(waitTimeout):
			t.Fatal("First did not return after Close")
		}
	})
}

func TestProcessPausedMembersKeepTheirPlaceByDefault(t *testing.T) {
	requireStopSignals(t)
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		ps := tc.startMembers(2)
		leader, lr := leaderOf(t, ps)
		f := without(ps, leader)[0]
		require.Empty(t, f.do(command{Op: "register", Name: "svc", Data: "f"}).Err)
		sub := f.do(command{Op: "subscribe", Name: "t"}).ID
		tc.waitRegistered(t, ps, "svc", []string{"f"})
		conns := tc.upstream.TotalConns()

		// Far longer than any heartbeat would allow. A paused Follower is slow, not dead:
		// it keeps its connection, its registration and its subscription.
		require.NoError(t, f.Signal(sigStop))
		tc.upstream.Push("t", []byte("while-stopped"))
		time.Sleep(1500 * time.Millisecond)
		require.Equal(t, []string{"f"}, tc.upstream.Registered("svc"))
		require.NoError(t, f.Signal(sigCont))
		f.waitMessage(sub, "while-stopped")

		// And a paused Leader is not given up on: calls resume when it does.
		require.NoError(t, leader.Signal(sigStop))
		time.Sleep(1500 * time.Millisecond)
		require.NoError(t, leader.Signal(sigCont))
		r := f.do(command{Op: "invoke", Name: "echo", Data: "x"})
		require.Empty(t, r.Err)

		var st cluster.Stats
		require.NoError(t, jsonUnmarshal(f.do(command{Op: "stats"}).Data, &st))
		require.Zero(t, st.Reconnects)
		require.Zero(t, st.Failovers)
		require.Equal(t, lr.Term, st.Term)
		require.Equal(t, conns, tc.upstream.TotalConns(), "nobody reconnected upstream")
	})
}

func TestProcessHeartbeatTimeoutDropsAPausedFollower(t *testing.T) {
	requireStopSignals(t)
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		l := tc.start(memberOpts{heartbeat: "100ms"}) // HeartbeatTimeout 300ms
		require.Equal(t, "leader", l.joined().Role)
		f := tc.start(memberOpts{heartbeat: "100ms"})
		require.Equal(t, "follower", f.joined().Role)
		ps := []*proc{l, f}
		require.Empty(t, f.do(command{Op: "register", Name: "svc", Data: "f"}).Err)
		tc.waitRegistered(t, ps, "svc", []string{"f"})

		require.NoError(t, f.Signal(sigStop))
		stopped := true
		defer func() {
			if stopped {
				_ = f.Signal(sigCont)
			}
		}()
		// With the switch on, silence is death: the Leader drops the Follower and
		// withdraws what it registered.
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		require.NoError(t, tc.upstream.WaitRegistered(ctx, "svc", []string{}))
		require.NoError(t, f.Signal(sigCont))
		stopped = false
		// Back, it reconnects and registers again.
		tc.waitRegistered(t, ps, "svc", []string{"f"})
	})
}

// Deleting the lock file while it is held lets a newcomer lock a new file and lead: the
// old Leader notices (it checks its claim a few times a second), steps down and follows,
// so there is one Leader again, and every member is served.
func TestLeaderStepsDownWhenItsLockFileIsDeleted(t *testing.T) {
	tc := newTestCluster(t)
	var logs syncBuffer
	old := tc.join(func(c *cluster.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	f := tc.join(nil)
	require.Equal(t, cluster.RoleLeader, old.Role().Role)
	require.NoError(t, os.Remove(filepath.Join(tc.dir, tc.name+".lock")))
	newcomer := tc.join(nil)

	members := []*cluster.Client{old, f, newcomer}
	require.Eventually(t, func() bool {
		leaders := 0
		for _, c := range members {
			if c.Role().Role == cluster.RoleLeader {
				leaders++
			}
		}
		return leaders == 1 && old.Role().Role == cluster.RoleFollower
	}, waitTimeout, 5*time.Millisecond, "the old leader did not step down")
	require.Contains(t, logs.String(), "stepping down")
	for _, c := range members {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		out, err := c.Invoke(ctx, "echo", cluster.Message{Data: []byte("one leader")})
		cancel()
		require.NoError(t, err)
		require.Equal(t, "one leader", string(out.Data))
	}
}

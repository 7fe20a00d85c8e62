package cluster_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
)

// Stats.Ops counts each kind of call, its errors and timeouts, and a histogram of
// latencies that accounts for every call.
func TestStatsCountCallsByKind(t *testing.T) {
	tc := newTestCluster(t)
	tc.join(nil)
	f := tc.join(nil)
	ctx := context.Background()
	began := time.Now()
	for i := 0; i < 3; i++ {
		_, err := f.Invoke(ctx, "echo", cluster.Message{Data: []byte("x")})
		require.NoError(t, err)
	}
	_, err := f.Invoke(ctx, "no-such-method", cluster.Message{})
	require.Error(t, err)
	short, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-short.Done()
	_, err = f.Invoke(short, "echo", cluster.Message{})
	require.ErrorIs(t, err, cluster.ErrTimeout)
	require.NoError(t, f.Publish(ctx, "t", cluster.Message{Data: []byte("x")}))
	_, err = f.Subscribe(ctx, "t", func(cluster.Message) {})
	require.NoError(t, err)

	st := f.Stats()
	require.Len(t, st.Ops, 5)
	inv := st.Ops["invoke"]
	require.EqualValues(t, 5, inv.Calls)
	require.EqualValues(t, 2, inv.Errors)
	require.EqualValues(t, 1, inv.Timeouts)
	require.Len(t, inv.Latency, len(cluster.LatencyBuckets())+1)
	var sum uint64
	for _, n := range inv.Latency {
		sum += n
	}
	require.Equal(t, inv.Calls, sum, "every call is in one latency bucket")
	require.Positive(t, inv.LatencySum, "the latencies are added up")
	require.LessOrEqual(t, inv.LatencySum, time.Since(began), "the calls ran one after another")
	require.Zero(t, st.Ops["register"].LatencySum)
	require.EqualValues(t, 1, st.Ops["publish"].Calls)
	require.EqualValues(t, 1, st.Ops["subscribe"].Calls)
	require.Zero(t, st.Ops["register"].Calls)
	require.Equal(t, st.Calls, inv.Calls+st.Ops["publish"].Calls+st.Ops["subscribe"].Calls)

	// The bounds are fixed and increasing; the caller's copy is its own.
	b := cluster.LatencyBuckets()
	require.Equal(t, 100*time.Microsecond, b[0])
	for i := 1; i < len(b); i++ {
		require.Greater(t, b[i], b[i-1])
	}
	b[0] = 0
	require.Equal(t, 100*time.Microsecond, cluster.LatencyBuckets()[0])
}

// Stats count the bytes a member's connections carried, and never count back: a
// connection that ends stays counted.
func TestStatsCountBytes(t *testing.T) {
	tc := newTestCluster(t)
	leader := tc.join(nil)
	f := tc.join(nil)
	_, err := f.Invoke(context.Background(), "echo", cluster.Message{Data: make([]byte, 1000)})
	require.NoError(t, err)
	// A side counts a write once the write returns, which may be after the other side
	// read it: the two agree once both are done.
	var st, ls cluster.Stats
	require.Eventually(t, func() bool {
		st, ls = f.Stats(), leader.Stats()
		return st.BytesOut == ls.BytesIn && st.BytesIn == ls.BytesOut
	}, waitTimeout, time.Millisecond, "what the Follower wrote, the Leader read, and back")
	require.Greater(t, st.BytesOut, uint64(1000))
	require.Greater(t, st.BytesIn, uint64(1000))
	// The Leader leaves; the Follower's bytes stay counted and grow again.
	require.NoError(t, leader.Close())
	_, err = f.Invoke(context.Background(), "echo", cluster.Message{}) // f leads now
	require.NoError(t, err)
	after := f.Stats()
	require.GreaterOrEqual(t, after.BytesIn, st.BytesIn)
	require.GreaterOrEqual(t, after.BytesOut, st.BytesOut)
	require.GreaterOrEqual(t, leader.Stats().BytesIn, ls.BytesIn, "a closed Leader's counters stay")
}

// A status document over a member's MaxBody is refused as too large; the member's
// connection is unharmed.
func TestLeaderStatusOverMaxBody(t *testing.T) {
	tc := newTestCluster(t)
	leader := tc.join(nil)
	f := tc.join(func(c *cluster.Config) { c.MaxBody = 1024 })
	for i := 0; i < 40; i++ {
		_, err := leader.Subscribe(context.Background(), fmt.Sprintf("topic-%02d", i), func(cluster.Message) {})
		require.NoError(t, err)
	}
	_, err := f.LeaderStatus(context.Background())
	require.ErrorIs(t, err, cluster.ErrTooLarge)
	require.ErrorContains(t, err, "over this member's MaxBody of 1024")
	_, err = f.Invoke(context.Background(), "echo", cluster.Message{Data: []byte("x")})
	require.NoError(t, err)
	require.Zero(t, f.Stats().Failovers)
	st, err := leader.LeaderStatus(context.Background())
	require.NoError(t, err)
	require.Len(t, st.Topics, 40)
}

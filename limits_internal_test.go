package cluster

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/ipc"
)

// The admission's counts: in all, in handshake, by foreign uid, and descriptors.
func TestAdmissionCountsAgainstTheLimits(t *testing.T) {
	lim := Limits{MaxConns: 6, MaxConnsPerUID: 3, MaxHandshaking: 4, FDHeadroom: 10}.withDefaults()
	a := admission{lim: &lim, self: 1000}
	own := ipc.PeerCred{Known: true, UID: 1000}
	other := ipc.PeerCred{Known: true, UID: 2000}
	unknown := ipc.PeerCred{} // TCP: counts in all, never as a foreign uid
	limitOf := func(err error) string {
		t.Helper()
		var le *limitError
		require.True(t, errors.As(err, &le), "%v", err)
		require.ErrorIs(t, err, ErrLimit)
		return le.limit
	}

	// A foreign uid may hold half the handshake places.
	require.NoError(t, a.admit(other))
	require.NoError(t, a.admit(other))
	require.Equal(t, "MaxHandshaking", limitOf(a.admit(other)))
	a.handshook(other)
	require.NoError(t, a.admit(other)) // one left the handshake: a place is free again
	// Three connections of uid 2000 in all: its limit.
	a.handshook(other)
	a.handshook(other)
	require.Equal(t, "MaxConnsPerUID", limitOf(a.admit(other)))
	// The Leader's own uid and unknown peers are not held by it, only by the totals.
	require.NoError(t, a.admit(own))
	require.NoError(t, a.admit(unknown))
	require.NoError(t, a.admit(own))
	require.Equal(t, "MaxConns", limitOf(a.admit(own)))
	a.leave(own, true)
	a.leave(other, false)
	require.NoError(t, a.admit(other))
	require.Equal(t, 5, a.conns)

	// Descriptors: with a limit of 110 and a headroom of 10, 100 may be used. The
	// Leader's own uid uses 20 of them, peers of other uids 40: they may hold three
	// quarters of the 80 the own uid leaves, 60, so 20 more.
	var g fdGauge
	open := int64(60)
	g.open = func() int64 { return open }
	g.limit.Store(110)
	g.count()
	g.foreign.Store(40)
	require.NoError(t, g.room(20, 10, true))
	require.Equal(t, "FDHeadroom", limitOf(g.room(21, 10, true)))
	require.NoError(t, g.room(40, 10, false))
	require.Equal(t, "FDHeadroom", limitOf(g.room(41, 10, false)))

	// A foreign connection's reserve survives a count, and is given back whole: the
	// estimate never goes below what is open.
	var a2 admission
	lim2 := Limits{}.withDefaults()
	a2.lim, a2.self = &lim2, 1000
	a2.fds.open = func() int64 { return open }
	a2.fds.limit.Store(1 << 20)
	a2.fds.count()
	for i := 0; i < 3; i++ {
		require.NoError(t, a2.admit(other))
	}
	open += 3 // the three connections are open now
	a2.fds.count()
	require.EqualValues(t, open+3*16, a2.fds.used())
	for i := 0; i < 3; i++ {
		a2.leave(other, true)
	}
	open -= 3
	require.EqualValues(t, open, a2.fds.used())
	require.Zero(t, a2.fds.foreign.Load())
	a2.fds.count()
	require.EqualValues(t, open, a2.fds.used())
}

// Zero means the default; a negative value means none; some bounds always hold.
func TestLimitsDefaults(t *testing.T) {
	l := Limits{MaxConns: -1, FrameTimeout: -1, HandshakeTimeout: -1, MaxNameLen: -1, MaxPartialBytes: -1}.withDefaults()
	require.Equal(t, maxInt, l.MaxConns)
	require.Zero(t, l.FrameTimeout, "no frame timeout")
	require.Zero(t, l.MaxPartialBytes, "no budget")
	require.Equal(t, DefaultLimits().HandshakeTimeout, l.HandshakeTimeout, "a handshake is always bounded")
	require.Equal(t, DefaultLimits().MaxNameLen, l.MaxNameLen, "a name is always bounded")
	require.Equal(t, DefaultLimits().MaxSubscriptions, l.MaxSubscriptions)
	require.Error(t, Limits{MaxNameLen: 1 << 20}.validate())
	require.Error(t, Limits{MaxFDs: 3}.validate())
}

// The Leader's own oneway calls are bounded like a Follower's connection: past
// MaxInflight running, InvokeOneway waits, within its ctx.
func TestLeaderOwnOnewaysAreBounded(t *testing.T) {
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	release := make(chan struct{})
	var running atomic.Int32
	c, err := Join(context.Background(), Config{
		Name: "ow", Dir: dir, Logger: slog.New(slog.DiscardHandler), Limits: Limits{MaxInflight: 3},
		NewService: func(context.Context) (Service, error) {
			return blockingService{release: release, running: &running}, nil
		},
	})
	require.NoError(t, err)
	defer c.Close()
	for i := 0; i < 3; i++ {
		require.NoError(t, c.InvokeOneway(context.Background(), "block", Message{}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = c.InvokeOneway(ctx, "block", Message{})
	require.ErrorIs(t, err, ErrTimeout, "a fourth oneway call waits for a place")
	close(release)
	require.NoError(t, c.InvokeOneway(context.Background(), "block", Message{}))
	require.Eventually(t, func() bool { return running.Load() == 0 }, 30*time.Second, time.Millisecond)
}

type blockingService struct {
	release chan struct{}
	running *atomic.Int32
}

func (s blockingService) Invoke(ctx context.Context, _ string, _ Message) (Message, error) {
	s.running.Add(1)
	defer s.running.Add(-1)
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return Message{}, nil
}
func (blockingService) Subscribe(context.Context, string, func(Message)) (func(), error) {
	return func() {}, nil
}
func (blockingService) Publish(context.Context, string, Message) error { return nil }
func (blockingService) Close() error                                   { return nil }

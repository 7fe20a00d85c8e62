package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
)

// waitRegistered waits until the upstream lists exactly want on topic, then checks, after
// a round trip through every member (any late replay would have landed), that it still
// does: no registration is missing and none arrived twice.
func (tc *testCluster) waitRegistered(t *testing.T, ps []*proc, topic string, want []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, tc.upstream.WaitRegistered(ctx, topic, want))
	for _, p := range ps {
		require.Empty(t, p.do(command{Op: "invoke", Name: "echo"}).Err)
	}
	require.Equal(t, append([]string{}, slices.Sorted(slices.Values(want))...), tc.upstream.Registered(topic))
}

func TestProcessRegistrationsFollowTheirOwners(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		ps := tc.startMembers(5)
		leader, lr := leaderOf(t, ps)
		regOf := map[*proc]int{}
		live := func(ps []*proc, gone ...string) []string {
			var out []string
			for _, p := range ps {
				if name := fmt.Sprint("addr-", p.pid); !slices.Contains(gone, name) {
					out = append(out, name)
				}
			}
			return out
		}
		for _, p := range ps {
			r := p.do(command{Op: "register", Name: "svc", Data: fmt.Sprint("addr-", p.pid)})
			require.Empty(t, r.Err)
			regOf[p] = r.ID
		}
		// A plain Publish is a one-shot: it is not replayed to the next Leader.
		oneShot := ps[len(ps)-1]
		if oneShot == leader {
			oneShot = ps[0]
		}
		require.Empty(t, oneShot.do(command{Op: "publish", Name: "svc", Data: "one-shot"}).Err)
		tc.waitRegistered(t, ps, "svc", append(live(ps), "one-shot"))

		// The Leader dies: its Service session and everything registered through it go;
		// the survivors register theirs again with the next Leader, exactly once.
		leader.Kill()
		ps = without(ps, leader)
		leader, lr = awaitNewLeader(t, ps, lr.Term)
		tc.waitRegistered(t, ps, "svc", live(ps))

		// A withdrawn registration is gone, and stays gone through the next failover,
		// even when its owner is the member that becomes the next Leader.
		withdrawer := ps[0]
		if withdrawer == leader {
			withdrawer = ps[1]
		}
		require.Empty(t, withdrawer.do(command{Op: "withdraw", Sub: regOf[withdrawer]}).Err)
		require.Empty(t, withdrawer.do(command{Op: "withdraw", Sub: regOf[withdrawer]}).Err, "Withdraw is idempotent")
		gone := fmt.Sprint("addr-", withdrawer.pid)
		tc.waitRegistered(t, ps, "svc", live(ps, gone))
		leader.Kill()
		ps = without(ps, leader)
		leader, _ = awaitNewLeader(t, ps, lr.Term)
		tc.waitRegistered(t, ps, "svc", live(ps, gone))

		// A Follower that dies takes its registration with it: the Leader withdraws it.
		var follower *proc
		for _, p := range ps {
			if p != leader && p != withdrawer {
				follower = p
			}
		}
		require.NotNil(t, follower)
		follower.Kill()
		ps = without(ps, follower)
		tc.waitRegistered(t, ps, "svc", live(ps, gone))
	})
}

// recordingService is an in-process Service that records publishes and withdrawals in
// order, and can be made to refuse.
type recordingService struct {
	echoService
	mu     *sync.Mutex // guards *log
	log    *[]string
	refuse string // a payload Publish refuses
}

func (s *recordingService) Publish(ctx context.Context, topic string, msg cluster.Message) error {
	if string(msg.Data) == s.refuse {
		return errors.New("refused on purpose")
	}
	s.mu.Lock()
	*s.log = append(*s.log, "publish "+topic+" "+string(msg.Data))
	s.mu.Unlock()
	return s.echoService.Publish(ctx, topic, msg)
}

func (s *recordingService) Withdraw(_ context.Context, topic string, msg cluster.Message) error {
	s.mu.Lock()
	*s.log = append(*s.log, "withdraw "+topic+" "+string(msg.Data))
	s.mu.Unlock()
	return nil
}

func TestRegistrationsReplayInOrderToEachNewLeader(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		var mu sync.Mutex
		logs := map[int]*[]string{} // per term
		svc := func(c *cluster.Config) {
			c.NewService = func(context.Context) (cluster.Service, error) {
				mu.Lock()
				l := &[]string{}
				logs[len(logs)+1] = l
				mu.Unlock()
				return &recordingService{echoService: echoService{broker: &broker{subs: map[string]map[int]func(cluster.Message){}}}, mu: &mu, log: l, refuse: "bad"}, nil
			}
		}
		logOf := func(term int) []string {
			mu.Lock()
			defer mu.Unlock()
			if logs[term] == nil {
				return nil
			}
			return slices.Clone(*logs[term])
		}
		l := tc.join(svc)
		f1 := tc.join(svc)
		f2 := tc.join(svc)
		ctx := context.Background()
		var regs []*cluster.Registration
		for i := range 5 {
			r, err := f1.Register(ctx, "svc", cluster.Message{Data: fmt.Appendf(nil, "f1-%d", i)})
			require.NoError(t, err)
			regs = append(regs, r)
		}
		_, err := f1.Register(ctx, "svc", cluster.Message{Data: []byte("bad")})
		var re *cluster.RemoteError
		require.ErrorAs(t, err, &re, "the Service's refusal reaches the caller")
		require.Equal(t, 5, f1.Stats().Registrations, "a refused registration is not remembered")
		require.NoError(t, regs[2].Withdraw(ctx))
		require.Equal(t, "svc", regs[0].Topic())
		require.Equal(t, "f1-0", string(regs[0].Data()))
		_, err = l.Register(ctx, "svc", cluster.Message{Data: []byte("leader")})
		require.NoError(t, err)
		require.Equal(t, []string{
			"publish svc f1-0", "publish svc f1-1", "publish svc f1-2", "publish svc f1-3", "publish svc f1-4",
			"withdraw svc f1-2", "publish svc leader",
		}, logOf(1))

		// A graceful handover: the next Leader (f1 or f2) gets f1's live registrations
		// in order, once; the departed Leader's own registration goes with it.
		require.NoError(t, l.Close())
		require.Eventually(t, func() bool {
			return f1.Role().Role != cluster.RoleElecting && f2.Role().Role != cluster.RoleElecting &&
				f1.Role().Term == f2.Role().Term && f1.Role().Term > 1
		}, waitTimeout, time.Millisecond)
		want := []string{"publish svc f1-0", "publish svc f1-1", "publish svc f1-3", "publish svc f1-4"}
		require.Eventually(t, func() bool { return slices.Equal(want, logOf(2)) }, waitTimeout, time.Millisecond, "term 2 saw %q", logOf(2))

		// f2 leaves. If it led, the handover withdraws nothing (the Service is closing,
		// not the members leaving) and f1 registers its own with itself in the next
		// term; if it followed, it had nothing registered. Either way the current
		// term's Service holds exactly f1's live registrations, once, in order.
		require.NoError(t, f2.Close())
		require.Eventually(t, func() bool { return f1.Role().Role == cluster.RoleLeader }, waitTimeout, time.Millisecond)
		term := int(f1.Role().Term)
		require.Eventually(t, func() bool { return slices.Equal(want, logOf(term)) }, waitTimeout, time.Millisecond, "term %d saw %q", term, logOf(term))
		require.Equal(t, want, logOf(2), "nothing was withdrawn from term 2")
		// Another registration lands after the replayed ones.
		_, err = f1.Register(ctx, "svc", cluster.Message{Data: []byte("late")})
		require.NoError(t, err)
		require.Equal(t, append(slices.Clone(want), "publish svc late"), logOf(term))
	})
}

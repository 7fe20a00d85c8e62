package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/internal/member"
)

// startMembers starts n members one after another and waits until all joined.
func (tc *testCluster) startMembers(n int) []*proc {
	tc.t.Helper()
	ps := make([]*proc, n)
	for i := range ps {
		ps[i] = tc.start(memberOpts{})
	}
	for _, p := range ps {
		p.joined()
	}
	return ps
}

// leaderOf returns the one member whose Stats say it leads, failing unless exactly
// one does and every other follows it in the same term.
func leaderOf(t *testing.T, ps []*proc) (*proc, event) {
	t.Helper()
	var leader *proc
	var lr event
	roles := make([]event, len(ps))
	for i, p := range ps {
		roles[i] = p.role()
		if roles[i].Role == "leader" {
			require.Nil(t, leader, "two leaders: pid %d and pid %d", p.pid, leaderPID(leader))
			leader, lr = p, roles[i]
		}
	}
	require.NotNil(t, leader, "no leader among %+v", roles)
	for i, r := range roles {
		if ps[i] == leader {
			continue
		}
		require.Equal(t, "follower", r.Role, "member %d", ps[i].pid)
		require.Equal(t, lr.Term, r.Term, "member %d follows another term", ps[i].pid)
		require.Equal(t, leader.pid, r.LeaderPID, "member %d follows another leader", ps[i].pid)
	}
	return leader, lr
}

// awaitNewLeader waits until one member leads in a term after oldTerm and every other
// member follows it in that term. Two members reporting leadership at once fails at once.
func awaitNewLeader(t *testing.T, ps []*proc, oldTerm uint64) (*proc, event) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var leader *proc
		var lr event
		roles := make([]event, len(ps))
		for i, p := range ps {
			roles[i] = p.role()
			if roles[i].Role == "leader" {
				require.Nil(t, leader, "two leaders at once: pids %d and %d", p.pid, leaderPID(leader))
				leader, lr = p, roles[i]
			}
		}
		settled := leader != nil && lr.Term > oldTerm
		for i, r := range roles {
			if settled && ps[i] != leader && (r.Role != "follower" || r.Term != lr.Term || r.LeaderPID != leader.pid) {
				settled = false
			}
		}
		if settled {
			return leader, lr
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new leader after term %d: %+v", oldTerm, roles)
		}
		time.Sleep(time.Millisecond)
	}
}

func leaderPID(p *proc) int {
	if p == nil {
		return 0
	}
	return p.pid
}

func without(ps []*proc, gone *proc) []*proc {
	var out []*proc
	for _, p := range ps {
		if p != gone {
			out = append(out, p)
		}
	}
	return out
}

func TestProcessElectionOneLeaderOneUpstreamConnection(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		ps := tc.startMembers(4)
		leader, lr := leaderOf(t, ps)
		require.GreaterOrEqual(t, lr.Term, uint64(1))
		// Every member, leader included, invokes: the upstream only ever sees one connection.
		for _, p := range ps {
			r := p.do(command{Op: "invoke", Name: "echo", Data: fmt.Sprint("from ", p.pid)})
			require.Empty(t, r.Err)
			require.Equal(t, fmt.Sprint("from ", p.pid), r.Data)
		}
		r := ps[len(ps)-1].do(command{Op: "invoke", Name: "conns"})
		require.Empty(t, r.Err)
		require.Equal(t, "1", r.Data)
		require.Equal(t, 1, tc.upstream.MaxConns(), "the upstream saw more than one connection at once")
		require.Equal(t, 1, tc.upstream.TotalConns())
		_ = leader
	})
}

func TestProcessCallsFromEveryRole(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		ps := tc.startMembers(2)
		for _, p := range ps {
			// A Service error arrives with its message.
			r := p.do(command{Op: "invoke", Name: "fail", Data: "boom"})
			require.Equal(t, "remote", r.Kind, r.Err)
			require.Contains(t, r.Err, "failed on purpose: boom")
			// A call that outlives its deadline returns ErrTimeout, promptly.
			start := time.Now()
			r = p.do(command{Op: "invoke", Name: "sleep", Data: "20s", Timeout: "200ms"})
			require.Equal(t, "timeout", r.Kind, r.Err)
			require.Less(t, time.Since(start), 15*time.Second)
			// Oneway calls run: incr twice oneway, then read the counter.
			require.Empty(t, p.do(command{Op: "oneway", Name: "incr"}).Err)
		}
		// Both oneways ran (order relative to this invoke is not promised, so poll the counter).
		require.Eventually(t, func() bool {
			r := ps[0].do(command{Op: "invoke", Name: "incr"})
			n, _ := strconv.Atoi(r.Data)
			return n >= 3
		}, waitTimeout, 10*time.Millisecond)
	})
}

func TestProcessOneUpstreamSubscriptionPerTopic(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		ps := tc.startMembers(3)
		subs := make([]int, len(ps))
		for i, p := range ps {
			subs[i] = p.send(command{Op: "subscribe", Name: "cfg"})
		}
		// A second local subscriber in one process adds nothing upstream either.
		extra := ps[1].send(command{Op: "subscribe", Name: "cfg"})
		for i, p := range ps {
			require.Empty(t, p.result(subs[i]).Err)
		}
		require.Empty(t, ps[1].result(extra).Err)
		require.Equal(t, 1, tc.upstream.Subscribers("cfg"))

		for i := range 50 {
			require.Equal(t, 1, tc.upstream.Push("cfg", []byte(strconv.Itoa(i))))
		}
		for i, p := range ps {
			p.waitMessage(subs[i], "49")
			require.Equal(t, seq(0, 50), p.messages(subs[i]), "member %d lost or reordered messages", p.pid)
		}
		ps[1].waitMessage(extra, "49")

		// A late subscriber gets the latest message at once, from any process.
		late := ps[2].do(command{Op: "subscribe", Name: "cfg"})
		require.Empty(t, late.Err)
		ps[2].waitMessage(late.ID, "49")

		// A publish from a Follower reaches everyone through the one upstream subscription.
		require.Empty(t, ps[0].do(command{Op: "publish", Name: "cfg", Data: "published"}).Err)
		for i, p := range ps {
			p.waitMessage(subs[i], "published")
		}

		// The last unsubscribe on the host cancels the upstream subscription.
		for i, p := range ps {
			require.Empty(t, p.do(command{Op: "unsubscribe", Sub: subs[i]}).Err)
		}
		require.Equal(t, 1, tc.upstream.Subscribers("cfg"), "subscribers remain, so the upstream subscription must stay")
		require.Empty(t, ps[1].do(command{Op: "unsubscribe", Sub: extra}).Err)
		require.Empty(t, ps[2].do(command{Op: "unsubscribe", Sub: late.ID}).Err)
		require.Eventually(t, func() bool { return tc.upstream.Subscribers("cfg") == 0 }, waitTimeout, time.Millisecond)
	})
}

func seq(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

func TestProcessFailoverAfterSIGKILL(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		ps := tc.startMembers(3)
		leader, lr := leaderOf(t, ps)
		subs := map[*proc]int{}
		for _, p := range ps {
			subs[p] = p.do(command{Op: "subscribe", Name: "news"}).ID
		}
		tc.upstream.Push("news", []byte("before"))
		for _, p := range ps {
			p.waitMessage(subs[p], "before")
		}
		rest := without(ps, leader)
		// A call in flight on the Leader's connection when it dies returns ErrLeaderLost.
		inflight := rest[0].send(command{Op: "invoke", Name: "sleep", Data: "30s"})
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		require.NoError(t, waitInflight(ctx, tc))

		leader.Kill()
		r := rest[0].result(inflight)
		require.Equal(t, "leader-lost", r.Kind, r.Err)

		// A new Leader with a higher term; the others follow it.
		awaitNewLeader(t, rest, lr.Term)

		// The subscription was re-established upstream on the new Leader's connection, and
		// the dead Leader's connection is gone: still exactly one.
		tc.awaitNewSubscriber(t, "news", 2)
		require.Equal(t, 1, tc.upstream.Push("news", []byte("after")))
		for _, p := range rest {
			p.waitMessage(subs[p], "after")
		}
		// Calls work again from every survivor.
		for _, p := range rest {
			r := p.do(command{Op: "invoke", Name: "echo", Data: "again"})
			require.Empty(t, r.Err)
			require.Equal(t, "again", r.Data)
		}
		var st cluster.Stats
		for _, p := range rest {
			require.NoError(t, jsonUnmarshal(p.role().Data, &st))
			t.Logf("member %d: failover took %v", p.pid, st.LastFailover)
			// A survivor that follows the new Leader connected once more; the new
			// Leader connected to nobody.
			want := uint64(1)
			if st.Role == cluster.RoleLeader {
				want = 0
			}
			require.Equal(t, want, st.Reconnects, "member %d (%v)", p.pid, st.Role)
		}
	})
}

// waitInflight waits until the upstream has a sleep running (the in-flight call has
// reached the Leader's Service).
func waitInflight(ctx context.Context, tc *testCluster) error {
	for tc.upstream.Inflight() == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

func TestProcessGracefulHandover(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		ps := tc.startMembers(3)
		leader, lr := leaderOf(t, ps)
		rest := without(ps, leader)
		sub := rest[0].do(command{Op: "subscribe", Name: "t"}).ID

		// A call in flight when the Leader closes still completes: the Leader drains.
		inflight := rest[1].send(command{Op: "invoke", Name: "sleep", Data: "300ms"})
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		require.NoError(t, waitInflight(ctx, tc))
		leader.exit()
		r := rest[1].result(inflight)
		require.Empty(t, r.Err)
		require.Equal(t, "ok", r.Data)

		awaitNewLeader(t, rest, lr.Term)
		tc.awaitNewSubscriber(t, "t", 2)
		require.Equal(t, 1, tc.upstream.Push("t", []byte("x")))
		rest[0].waitMessage(sub, "x")
	})
}

func TestProcessCallsWaitForTheNextLeader(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		ps := tc.startMembers(2)
		leader, _ := leaderOf(t, ps)
		rest := without(ps, leader)
		leader.Kill()
		// Issued right after the kill, whatever the survivor's state: it must succeed
		// (it waits for the new Leader, here itself), not fail.
		r := rest[0].do(command{Op: "invoke", Name: "echo", Data: "x", Timeout: "20s"})
		if r.Kind == "leader-lost" {
			// It raced onto the dying connection; the next call must succeed.
			r = rest[0].do(command{Op: "invoke", Name: "echo", Data: "x", Timeout: "20s"})
		}
		require.Empty(t, r.Err)
		require.Equal(t, "leader", rest[0].role().Role)
	})
}

func TestProcessLeadPolicies(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		// A never-lead member with no Leader around cannot join, and says what it found.
		p := tc.start(memberOpts{lead: "never", joinTimeout: "300ms"})
		e := p.wait(func(e event) bool { return e.Ev == "join-error" || e.Ev == "joined" })
		require.Equal(t, "join-error", e.Ev)
		require.Equal(t, "no-leader", e.Kind, e.Err)
		require.Contains(t, e.Err, "never leads")
		require.Contains(t, e.Err, tc.where())

		auto := tc.start(memberOpts{})
		require.Equal(t, "leader", auto.joined().Role)

		// A designated Leader cannot take over a live one; its error names the holder.
		a := tc.start(memberOpts{lead: "always", joinTimeout: "300ms"})
		e = a.wait(func(e event) bool { return e.Ev == "join-error" || e.Ev == "joined" })
		require.Equal(t, "join-error", e.Ev)
		require.Contains(t, e.Err, fmt.Sprintf("pid %d", auto.pid))

		// A never-lead member follows; a designated one waits and takes over on handover.
		never := tc.start(memberOpts{lead: "never"})
		require.Equal(t, "follower", never.joined().Role)
		always := tc.start(memberOpts{lead: "always"})
		auto.exit()
		require.Equal(t, "leader", always.joined().Role)
		require.Eventually(t, func() bool { return never.role().LeaderPID == always.pid }, waitTimeout, time.Millisecond)
		r := never.do(command{Op: "invoke", Name: "echo", Data: "hi"})
		require.Empty(t, r.Err)

		// When the only auto-capable member dies, the never-lead one stays a Follower
		// without a Leader, and its calls time out instead of hanging.
		always.Kill()
		r = never.do(command{Op: "invoke", Name: "echo", Data: "hi", Timeout: "300ms"})
		require.Contains(t, []string{"timeout", "leader-lost"}, r.Kind, r.Err)
		require.Eventually(t, func() bool { return never.role().Role == "electing" }, waitTimeout, time.Millisecond)
	})
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// runHello runs the "hello" role with extra process attributes and returns its output.
func runHello(t *testing.T, sock, name string, attr *syscall.SysProcAttr) string {
	t.Helper()
	bin := os.Args[0]
	if attr != nil {
		bin = publicCopy(t, bin) // go test's build dir is private to its user
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnviron(t, "hello", member.Config{Name: name}, memberArgs{Sock: sock}))
	cmd.SysProcAttr = attr
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	return strings.TrimSpace(string(out))
}

// publicCopy copies the file at path into a fresh world-readable directory so that a
// process of another uid can execute it.
func publicCopy(t *testing.T, path string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	dst := filepath.Join(dir, "member")
	require.NoError(t, os.WriteFile(dst, b, 0o755))
	return dst
}

// A stopped Leader keeps its lock: nobody may take over (never two Leaders). Followers
// time out, drop the silent connection after the heartbeat timeout, and reconnect to the
// same Leader, in the same term, when it resumes.
func TestProcessStoppedLeaderIsNotReplaced(t *testing.T) {
	requireStopSignals(t)
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		l := tc.start(memberOpts{heartbeat: "100ms"})
		require.Equal(t, "leader", l.joined().Role)
		f := tc.start(memberOpts{heartbeat: "100ms"})
		fj := f.joined()
		require.Equal(t, "follower", fj.Role)

		require.NoError(t, l.Signal(sigStop))
		paused := true
		defer func() {
			if paused {
				_ = l.Signal(sigCont)
			}
		}()
		waitStopped(t, l.pid)
		// The call ends, by its deadline or by the heartbeat dropping the connection.
		r := f.do(command{Op: "invoke", Name: "echo", Data: "x", Timeout: "150ms"})
		require.Contains(t, []string{"timeout", "leader-lost"}, r.Kind, r.Err)
		// The heartbeat timeout (3 x 100ms) drops the silent connection.
		f.wait(func(e event) bool { return e.Ev == "role" && e.Role == "electing" })
		// Give the Follower ample opportunity to (wrongly) take over; it must not.
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			require.NotEqual(t, "leader", f.role().Role, "a follower took over from a stopped leader that still holds the lock")
			time.Sleep(20 * time.Millisecond)
		}

		require.NoError(t, l.Signal(sigCont))
		paused = false
		require.Eventually(t, func() bool {
			r := f.role()
			return r.Role == "follower" && r.Term == fj.Term && r.LeaderPID == l.pid
		}, waitTimeout, time.Millisecond)
		r = f.do(command{Op: "invoke", Name: "echo", Data: "back"})
		require.Empty(t, r.Err)
		require.Equal(t, "back", r.Data)
	})
}

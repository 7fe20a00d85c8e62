package cluster_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/internal/member"
)

// Hostile peers, as processes: while each attack runs, the Leader's resources stay under
// its limits, a Follower it already serves keeps being served, a fresh member can join
// (when the attacker is another uid: one of the Leader's own uid can do anything its
// uid can), and everything is given back once the attacker is gone.

// attack starts a hostile peer (see attackMain) against tc's Leader, as cred (nil: as
// this process), doing what a says.
func (tc *testCluster) attack(bin string, cred *syscall.Credential, a attackSpec) *proc {
	tc.t.Helper()
	o := memberOpts{role: "attack", bin: bin, args: memberArgs{Attack: &a, Sock: filepath.Join(tc.dir, tc.name+".sock")}}
	if cred != nil {
		o.attr = &syscall.SysProcAttr{Credential: cred}
	}
	return tc.start(o)
}

// attackReportOf returns the attacker's latest report that satisfies pred, waiting for
// one.
func attackReportOf(p *proc, pred func(r attackReport) bool) attackReport {
	p.t.Helper()
	var last attackReport
	p.wait(func(e event) bool {
		if e.Ev != "attack" {
			return false
		}
		var r attackReport
		if json.Unmarshal([]byte(e.Data), &r) != nil {
			return false
		}
		last = r
		return pred(r)
	})
	return last
}

// stats asks a member for its Stats.
func stats(p *proc) cluster.Stats {
	p.t.Helper()
	var st cluster.Stats
	require.NoError(p.t, jsonUnmarshal(p.do(command{Op: "stats"}).Data, &st))
	return st
}

// openFDsOf counts process pid's open descriptors.
func openFDsOf(t testing.TB, pid int) int {
	t.Helper()
	names, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	return len(names)
}

// rssOf returns process pid's resident memory, in bytes.
func rssOf(t testing.TB, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if kb, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			require.NoError(t, err)
			return n << 10
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// stillServed checks that a Follower the Leader served before the attack is served now.
func stillServed(t *testing.T, f *proc) {
	t.Helper()
	r := f.do(command{Op: "invoke", Name: "echo", Data: "still here", Timeout: "20s"})
	require.Empty(t, r.Err)
	require.Equal(t, "still here", r.Data)
}

// stopAttack ends the attacker and waits for it to exit.
func stopAttack(t *testing.T, atk *proc) attackReport {
	t.Helper()
	_ = atk.CloseInput()
	select {
	case <-atk.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("the attacker %d did not exit", atk.pid)
	}
	var last attackReport
	for _, e := range atk.Events() {
		if e.Ev == "attack" {
			require.NoError(t, json.Unmarshal([]byte(e.Data), &last))
		}
	}
	return last
}

// reclaimed waits until the Leader holds no more descriptors than before the attack
// (a few for goroutines' timers and the like may come and go).
func reclaimed(t *testing.T, leader *proc, base int) {
	t.Helper()
	require.Eventually(t, func() bool { return openFDsOf(t, leader.pid) <= base+2 }, waitTimeout, 10*time.Millisecond,
		"the leader still holds %d descriptors, %d before the attack", openFDsOf(t, leader.pid), base)
}

// A peer of the Leader's own uid that floods the handshake: the Leader refuses past
// MaxHandshaking with an error frame, closes the idle ones at HandshakeTimeout, logs a
// few lines instead of one per connection, and serves its Followers throughout.
func TestProcessHostileHandshakeFlood(t *testing.T) {
	tc := newTestCluster(t)
	start := time.Now()
	lim := cluster.Limits{MaxHandshaking: 8, HandshakeTimeout: 300 * time.Millisecond}
	leader := tc.start(memberOpts{cfg: member.Config{Limits: lim}})
	require.Equal(t, "leader", leader.joined().Role)
	f := tc.start(memberOpts{})
	f.joined()
	base := openFDsOf(t, leader.pid)

	atk := tc.attack("", nil, attackSpec{Mode: "handshake-idle", N: 40})
	attackReportOf(atk, func(r attackReport) bool { return r.Codes["limit"] >= 100 && r.Closed >= 20 })
	stillServed(t, f)
	require.LessOrEqual(t, openFDsOf(t, leader.pid), base+8+2, "the leader holds more than MaxHandshaking connections in handshake")
	r := stopAttack(t, atk)
	t.Logf("attacker: %+v", r)
	reclaimed(t, leader, base)

	st := stats(leader)
	require.GreaterOrEqual(t, st.Refused["MaxHandshaking"], uint64(100))
	require.GreaterOrEqual(t, st.Refused["handshake"], uint64(20))
	// One line per kind, then a summary per kind every 10 s: not one per connection.
	logs := leader.Stderr()
	kinds := 2 + 1 // MaxHandshaking, handshake, and one more the summaries may name
	lines := kinds * (1 + int(time.Since(start)/(10*time.Second)+1))
	require.LessOrEqual(t, strings.Count(logs, "cluster: refused"), lines, logs)
	require.Contains(t, logs, "limit=MaxHandshaking")
}

// A Follower that subscribes to topic after topic, or registers again and again, is
// refused past MaxSubscriptions and MaxRegistrations with an error frame naming the
// limit; its connection stays and is served.
func TestProcessHostileSubscriptionAndRegistrationFloods(t *testing.T) {
	tc := newTestCluster(t)
	lim := cluster.Limits{MaxSubscriptions: 100, MaxRegistrations: 50}
	leader := tc.start(memberOpts{cfg: member.Config{Limits: lim}})
	require.Equal(t, "leader", leader.joined().Role)

	atk := tc.attack("", nil, attackSpec{Mode: "subscribe", N: 1000})
	r := attackReportOf(atk, func(r attackReport) bool { return r.Answered+r.Codes["limit"] == 1000 })
	require.Equal(t, 100, r.Answered)
	require.Equal(t, 900, r.Codes["limit"])
	require.Zero(t, r.Closed)
	stopAttack(t, atk)

	atk = tc.attack("", nil, attackSpec{Mode: "register", N: 500})
	r = attackReportOf(atk, func(r attackReport) bool { return r.Answered+r.Codes["limit"] == 500 })
	require.Equal(t, 50, r.Answered)
	require.Equal(t, 450, r.Codes["limit"])
	stopAttack(t, atk)

	st := stats(leader)
	require.EqualValues(t, 900, st.Refused["MaxSubscriptions"])
	require.EqualValues(t, 450, st.Refused["MaxRegistrations"])
	// The member's own API says the same, with the limit's name.
	f := tc.start(memberOpts{cfg: member.Config{Limits: lim}})
	f.joined()
	for i := 0; i < 100; i++ {
		require.Empty(t, f.do(command{Op: "subscribe", Name: fmt.Sprintf("t%d", i)}).Err)
	}
	res := f.do(command{Op: "subscribe", Name: "one-too-many"})
	require.Equal(t, "limit", res.Kind, res.Err)
	require.Contains(t, res.Err, "over the leader's limit of 100 (Config.Limits.MaxSubscriptions)")
}

// foreignAttack sets up a Leader of uid 1000 sharing its Dir with group 2000, a Follower
// of the same uid, and returns them with the test binary other uids may run; the attacks
// come from uid 1001, in group 2000: admitted by AllowGIDs, but another user. The
// Leader has limits lim and, unless noFile is 0, an RLIMIT_NOFILE of noFile.
func foreignAttack(t *testing.T, lim cluster.Limits, noFile uint64) (tc *testCluster, bin string, leader, f *proc) {
	t.Helper()
	tc, bin = sharedVolume(t, 0o770|os.ModeSetgid)
	leader = startAs(tc, bin, uid1000, member.Config{AllowGIDs: shared.AllowGIDs, Limits: lim, NoFile: noFile})
	require.Equal(t, "leader", leader.joined().Role)
	f = startAs(tc, bin, uid1000, shared)
	require.Equal(t, "follower", f.joined().Role)
	return tc, bin, leader, f
}

// joinsDuring checks that a fresh member of the Leader's uid joins and is served.
func joinsDuring(t *testing.T, tc *testCluster, bin string) {
	t.Helper()
	fresh := startAs(tc, bin, uid1000, shared)
	require.Equal(t, "follower", fresh.joined().Role)
	stillServed(t, fresh)
}

// Another uid floods the handshake: it gets at most half the places, so members of the
// Leader's uid still join.
func TestProcessHostileForeignHandshakeFlood(t *testing.T) {
	lim := cluster.Limits{MaxHandshaking: 8, HandshakeTimeout: 2 * time.Second}
	tc, bin, leader, f := foreignAttack(t, lim, 0)
	atk := tc.attack(bin, uid1001, attackSpec{Mode: "handshake-idle", N: 40})
	attackReportOf(atk, func(r attackReport) bool { return r.Codes["limit"] >= 100 })
	joinsDuring(t, tc, bin)
	stillServed(t, f)
	stopAttack(t, atk)
	require.Greater(t, stats(leader).Refused["MaxHandshaking"], uint64(0))
}

// Another uid opens connection after connection and holds them idle: past
// MaxConnsPerUID they are refused; the Leader's own uid joins; all is given back.
func TestProcessHostileForeignIdleConnections(t *testing.T) {
	lim := cluster.Limits{MaxConnsPerUID: 16}
	tc, bin, leader, f := foreignAttack(t, lim, 0)
	base := openFDsOf(t, leader.pid)
	atk := tc.attack(bin, uid1001, attackSpec{Mode: "idle", N: 100})
	r := attackReportOf(atk, func(r attackReport) bool { return r.Welcomed+r.Refused == 100 })
	require.Equal(t, 16, r.Welcomed)
	require.Equal(t, 84, r.Codes["limit"])
	require.LessOrEqual(t, openFDsOf(t, leader.pid), base+16+2)
	joinsDuring(t, tc, bin)
	stillServed(t, f)
	st := stats(leader)
	require.EqualValues(t, 84, st.Refused["MaxConnsPerUID"])
	require.Equal(t, 1+1+16, st.Followers) // f, the fresh member, the attacker's 16
	stopAttack(t, atk)
	reclaimed(t, leader, base+2) // the fresh member's connection stays
}

// Another uid sends frames that pass descriptors and never finish them: the Leader's
// descriptors stay under its RLIMIT_NOFILE less the headroom, peers of other uids get at
// most their share, and the Leader's own uid still joins.
func TestProcessHostileForeignDescriptorHoarding(t *testing.T) {
	const nofile = 400
	lim := cluster.Limits{FDHeadroom: 32}
	tc, bin, leader, f := foreignAttack(t, lim, nofile)
	base := openFDsOf(t, leader.pid)
	atk := tc.attack(bin, uid1001, attackSpec{Mode: "fds", N: 40, Body: 1 << 20, Sent: 100})
	r := attackReportOf(atk, func(r attackReport) bool { return r.Welcomed+r.Refused == 40 })
	require.Greater(t, r.Codes["limit"], 0, "%+v", r)
	// Each admitted connection holds itself and 16 descriptors: peers of other uids
	// may hold three quarters of what is above the headroom.
	share := (nofile - 32) * 3 / 4
	require.LessOrEqual(t, r.Welcomed*(1+16), share, "%+v", r)
	require.Less(t, openFDsOf(t, leader.pid), nofile-32+1)
	joinsDuring(t, tc, bin)
	stillServed(t, f)
	stopAttack(t, atk)
	reclaimed(t, leader, base+2)
}

// Another uid sends headers of large frames and only part of their bodies, then stalls:
// the Leader holds memory in proportion to what was sent (not to what the headers
// claim), within MaxPartialBytes, and drops each stalled frame after FrameTimeout with
// an error frame; the Leader's own uid joins and is served throughout.
func TestProcessHostileForeignPartialFrames(t *testing.T) {
	lim := cluster.Limits{FrameTimeout: 2 * time.Second, MaxPartialBytes: 64 << 20}
	tc, bin, leader, f := foreignAttack(t, lim, 0)
	rss := rssOf(t, leader.pid)
	const n, sent = 32, 1 << 20 // 32 headers claiming 16 MiB each, 1 MiB of each sent
	atk := tc.attack(bin, uid1001, attackSpec{Mode: "partial", N: n, Body: 16<<20 - 8, Sent: sent})
	attackReportOf(atk, func(r attackReport) bool { return r.Welcomed == n })
	joinsDuring(t, tc, bin)
	stillServed(t, f)
	// What the headers claim is 512 MiB; what was sent is 32 MiB, and the budget 64 MiB.
	grew := rssOf(t, leader.pid) - rss
	t.Logf("the leader's resident memory grew by %d MiB", grew>>20)
	require.Less(t, grew, int64(160<<20), "the leader holds memory for what the headers claim, not what was sent")
	// Past FrameTimeout every stalled frame is dropped, saying why.
	r := attackReportOf(atk, func(r attackReport) bool { return r.Closed == n })
	require.Equal(t, n, r.Codes["limit"], "%+v", r)
	st := stats(leader)
	require.EqualValues(t, n, st.Refused["FrameTimeout"])
	stopAttack(t, atk)
	stillServed(t, f)
}

// A Leader that runs out of descriptors (here: with no headroom, against idle
// connections) refuses the next peers with an error frame that says so, from a
// descriptor it kept spare, instead of leaving them in the backlog; it keeps serving its
// Followers, and gets its descriptors back.
func TestProcessLeaderOutOfDescriptors(t *testing.T) {
	tc := newTestCluster(t)
	lim := cluster.Limits{FDHeadroom: -1}
	leader := tc.start(memberOpts{cfg: member.Config{Limits: lim, NoFile: 96}})
	require.Equal(t, "leader", leader.joined().Role)
	f := tc.start(memberOpts{})
	f.joined()
	base := openFDsOf(t, leader.pid)
	atk := tc.attack("", nil, attackSpec{Mode: "idle", N: 120})
	r := attackReportOf(atk, func(r attackReport) bool { return r.Welcomed+r.Refused+r.Errors == 120 })
	t.Logf("attacker: %+v", r)
	require.Positive(t, r.Codes["limit"], "%+v", r)
	require.LessOrEqual(t, openFDsOf(t, leader.pid), 96)
	st := stats(leader)
	require.Positive(t, st.Refused["FDHeadroom"], "%v", st.Refused)
	ranOut := slices.ContainsFunc(r.Said, func(m string) bool { return strings.Contains(m, "the leader ran out of descriptors") })
	require.True(t, ranOut, "no refusal from the spare descriptor: %q", r.Said)
	stopAttack(t, atk)
	reclaimed(t, leader, base)
	stillServed(t, f)
}

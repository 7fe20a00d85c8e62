//go:build !windows

package chaos

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster/internal/member"
	"github.com/cluster-client-go/cluster/internal/upstream"
)

var (
	flagDuration = flag.Duration("chaos.duration", 0, "inject faults for this long (a soak run); 0 injects -chaos.faults faults")
	flagFaults   = flag.Int("chaos.faults", 24, "faults to inject when -chaos.duration is 0")
	flagMembers  = flag.Int("chaos.members", 4, "member processes")
	flagMany     = flag.Int("chaos.many", 32, "member processes of TestChaosManyFollowers (0 skips it)")
	flagManyN    = flag.Int("chaos.many-faults", 4, "faults TestChaosManyFollowers injects")
	flagSeed     = flag.Uint64("chaos.seed", 0, "seed for the choice of faults; 0 picks one (printed)")
)

const (
	heartbeat = 100 * time.Millisecond // members drop a silent peer after 3x this
	waitLimit = 60 * time.Second       // for any "eventually" condition
)

func TestMain(m *testing.M) {
	if cfg, ok, err := member.FromEnv(); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(memberMain(cfg))
	}
	goleak.VerifyTestMain(m)
}

// proc is one member process as the controller sees it.
type proc struct {
	*member.Proc
	pid int

	mu     sync.Mutex
	events []event   // what it wrote, as the controller reads it (see read)
	killed time.Time // when the controller sent SIGKILL (zero if never)
}

func (p *proc) send(op string) { _, _ = p.Send(member.Command{Op: op}) }

// read records e, the way the controller reads it: a failed Command, a failed Join or
// a line that is not JSON is a violation; the answers of probe and observe are events
// "probe" and "stats".
func (p *proc) read(e member.Event) {
	var ce event
	switch {
	case e.Ev == member.EvResult && e.Err != "":
		ce = event{Ev: "violation", What: fmt.Sprintf("%s: %s", e.Op, e.Err)}
	case e.Ev == member.EvResult && e.Op == "probe":
		ce = event{Ev: "probe"}
	case e.Ev == member.EvResult && e.Op == "observe":
		if err := json.Unmarshal(e.Body, &ce); err != nil {
			ce = event{Ev: "violation", What: fmt.Sprintf("unreadable answer %s to observe: %v", e.Body, err)}
		} else {
			ce.Ev = "stats"
		}
	case e.Ev == member.EvJoinError:
		ce = event{Ev: "violation", What: "join: " + e.Err}
	case e.Ev == member.EvUnreadable:
		ce = event{Ev: "violation", What: fmt.Sprintf("unreadable output %q", e.Data)}
	default:
		if err := json.Unmarshal(e.Line, &ce); err != nil {
			ce = event{Ev: "violation", What: fmt.Sprintf("unreadable output %q: %v", e.Line, err)}
		}
	}
	if ce.At == 0 {
		ce.At = e.At
	}
	p.mu.Lock()
	p.events = append(p.events, ce)
	p.mu.Unlock()
}

// last returns the latest event of kind ev, if any.
func (p *proc) last(ev string) (event, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.events) - 1; i >= 0; i-- {
		if p.events[i].Ev == ev {
			return p.events[i], true
		}
	}
	return event{}, false
}

func (p *proc) all() []event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

func (p *proc) alive() bool {
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// run is one chaos run: the upstream, the members, the controller's records.
type run struct {
	t    *testing.T
	dir  string
	up   *upstream.Server
	seed uint64 // of rng, printed with any failure to replay it (-chaos.seed)
	rng  *rand.Rand
	seq  int
	stop chan struct{}

	mu      sync.Mutex
	procs   []*proc // every process ever started, in order
	changed chan struct{}

	faults   map[string]int
	log      []string        // the faults, in order
	failover []time.Duration // SIGKILL of the Leader -> first invoke served by the next
	elected  []time.Duration // SIGKILL of the Leader -> next Leader's term begins
	handover []time.Duration // Close of the Leader -> first invoke served by the next
}

func (r *run) start() *proc {
	r.t.Helper()
	p := &proc{}
	mp, err := member.Start(member.Spec{
		Config: member.Config{Name: "chaos", Dir: r.dir, Upstream: r.up.Addr(), Heartbeat: heartbeat, Log: "info", JoinTimeout: waitLimit},
		Args:   []string{"-test.run=^$"},
		// Enough for the last lines of a member's log when the run fails.
		StderrTail: 32 << 10,
		OnEvent: func(e member.Event) {
			p.read(e)
			r.poke()
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	p.Proc, p.pid = mp, mp.PID()
	go func() {
		<-mp.Done()
		r.poke()
	}()
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	return p
}

func (r *run) poke() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// waitFor polls cond (on every member event, and every 20 ms) until it returns "", or
// fails the test with cond's last complaint after waitLimit.
func (r *run) waitFor(what string, cond func() string) {
	r.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		r.checkViolations()
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			r.fail("%s: still not the case after %v: %s", what, waitLimit, why)
		}
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (r *run) live() []*proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*proc
	for _, p := range r.procs {
		if p.alive() && p.killed.IsZero() {
			out = append(out, p)
		}
	}
	return out
}

// fail reports what the members said before failing.
func (r *run) fail(format string, args ...any) {
	r.t.Helper()
	var b strings.Builder
	r.mu.Lock()
	procs := slices.Clone(r.procs)
	r.mu.Unlock()
	for _, p := range procs {
		fmt.Fprintf(&b, "\n--- member pid %d (alive %v) stderr tail:\n%s", p.pid, p.alive(), lastLines(p.Stderr(), 15))
	}
	r.t.Fatalf(format+"\n(seed %d)%s", append(args, r.seed, b.String())...)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// checkViolations fails on anything a member reported as broken, and on a member that
// exited without being told to.
func (r *run) checkViolations() {
	r.t.Helper()
	r.mu.Lock()
	procs := slices.Clone(r.procs)
	r.mu.Unlock()
	for _, p := range procs {
		for _, e := range p.all() {
			if e.Ev == "violation" {
				r.fail("member pid %d: %s", p.pid, e.What)
			}
		}
		if !p.alive() && p.killed.IsZero() {
			if _, ok := p.last("final"); !ok {
				r.fail("member pid %d exited on its own: %v", p.pid, p.ProcessState())
			}
		}
	}
}

// leader returns the live member whose latest role is leader, and the term.
func (r *run) leaders() []*proc {
	var out []*proc
	for _, p := range r.live() {
		if e, ok := p.last("role"); ok && e.Role == "leader" {
			out = append(out, p)
		}
	}
	return out
}

// stable waits until the cluster is whole again: one Leader, every live member in its
// term and connected (the Leader counts them; each Follower took its role after
// reconnected, when that is not zero), and every member receiving the upstream stream
// through the Leader's current upstream connection.
func (r *run) stable(n int, reconnected time.Time) *proc {
	r.t.Helper()
	var leader *proc
	stats := map[*proc]event{}
	var asked time.Time
	r.waitFor("the cluster to settle", func() string {
		live := r.live()
		if len(live) != n {
			return fmt.Sprintf("%d live members, want %d", len(live), n)
		}
		ls := r.leaders()
		if len(ls) != 1 {
			return fmt.Sprintf("%d members say they lead", len(ls))
		}
		leader = ls[0]
		term := func(p *proc) uint64 { e, _ := p.last("role"); return e.Term }
		for _, p := range live {
			e, _ := p.last("role")
			if e.Role != "leader" && e.Role != "follower" || e.Term != term(leader) {
				return fmt.Sprintf("member %d is %s in term %d, the leader's term is %d", p.pid, e.Role, e.Term, term(leader))
			}
			if p != leader && e.At < reconnected.UnixNano() {
				return fmt.Sprintf("member %d has not reconnected since the leader continued", p.pid)
			}
		}
		// Ask for fresh stats now and then, and judge the answers that arrived since.
		for _, p := range live {
			if e, ok := p.last("stats"); ok && e.At > reconnected.UnixNano() {
				stats[p] = e
			}
		}
		if time.Since(asked) > 20*time.Millisecond {
			asked = time.Now()
			for _, p := range live {
				p.send("observe")
			}
		}
		conn := r.up.TotalConns() // only Leaders connect upstream: the latest is the current one
		if st := stats[leader]; st.Followers != n-1 {
			return fmt.Sprintf("the leader counts %d followers, want %d", st.Followers, n-1)
		}
		for _, p := range live {
			if st := stats[p]; st.Conn != conn || st.OnConn < 3 {
				return fmt.Sprintf("member %d saw %d messages on upstream connection %d, want 3 on %d", p.pid, st.OnConn, st.Conn, conn)
			}
		}
		return ""
	})
	return leader
}

// pusher pushes the numbered stream, tagged with the upstream connection it goes to.
func (r *run) pusher(done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.seq++
			seq := r.seq
			r.up.PushEach("seq", func(conn int) []byte { return fmt.Appendf(nil, "conn=%d seq=%d", conn, seq) })
		}
	}
}

// probe asks every live member for an invoke and returns when the first succeeded.
func (r *run) probe(since time.Time, except *proc) time.Duration {
	r.t.Helper()
	live := r.live()
	marks := map[*proc]int{}
	for _, p := range live {
		if p == except {
			continue
		}
		marks[p] = len(p.all())
		p.send("probe")
	}
	var first time.Time
	r.waitFor("an invoke to succeed after the fault", func() string {
		for p, mark := range marks {
			for _, e := range p.all()[mark:] {
				if e.Ev == "probe" && (first.IsZero() || e.At < first.UnixNano()) {
					first = time.Unix(0, e.At)
				}
			}
		}
		if first.IsZero() {
			return "no probe answered"
		}
		return ""
	})
	return first.Sub(since)
}

// checkLeadership verifies that leadership intervals never overlapped: each term begins
// (the Leader's role event) after the previous Leader stopped (its next role event, or
// the moment the controller sent it SIGKILL), and terms only grow.
func (r *run) checkLeadership() {
	r.t.Helper()
	type interval struct {
		pid        int
		term       uint64
		start, end int64
	}
	var ivs []interval
	r.mu.Lock()
	procs := slices.Clone(r.procs)
	r.mu.Unlock()
	for _, p := range procs {
		var cur *interval
		for _, e := range p.all() {
			if e.Ev != "role" {
				continue
			}
			if cur != nil {
				cur.end = e.At
				ivs = append(ivs, *cur)
				cur = nil
			}
			if e.Role == "leader" {
				cur = &interval{pid: p.pid, term: e.Term, start: e.At, end: 1<<63 - 1}
			}
		}
		if cur != nil {
			p.mu.Lock()
			if !p.killed.IsZero() {
				cur.end = p.killed.UnixNano()
			}
			p.mu.Unlock()
			ivs = append(ivs, *cur)
		}
	}
	sort.Slice(ivs, func(i, j int) bool { return ivs[i].start < ivs[j].start })
	for i := 1; i < len(ivs); i++ {
		a, b := ivs[i-1], ivs[i]
		if b.start < a.end {
			r.fail("two leaders at once: pid %d led term %d until %s, pid %d led term %d from %s",
				a.pid, a.term, time.Unix(0, a.end).Format(time.StampMicro), b.pid, b.term, time.Unix(0, b.start).Format(time.StampMicro))
		}
		if b.term <= a.term {
			r.fail("term %d (pid %d) followed term %d (pid %d): terms must grow", b.term, b.pid, a.term, a.pid)
		}
	}
	if n := r.up.MaxConns(); n > 1 {
		r.fail("the upstream saw %d live connections at once: %s\nfaults so far: %s", n, r.up.Overlap(), strings.Join(r.log, ", "))
	}
}

// TestChaos injects faults into a small pool under load (-chaos.faults of them, or for
// -chaos.duration in a soak run).
func TestChaos(t *testing.T) {
	chaos(t, *flagMembers, *flagFaults, *flagDuration)
}

// TestChaosManyFollowers injects a few faults into a large pool (-chaos.many member
// processes), where a failover is many Followers reconnecting to the new Leader at
// once: the invariants are the same.
func TestChaosManyFollowers(t *testing.T) {
	if *flagMany == 0 || testing.Short() {
		t.Skip("-chaos.many is 0, or -short")
	}
	chaos(t, *flagMany, *flagManyN, 0)
}

// chaos starts n members under load, injects faults (a SIGKILL, a pause or a Close of
// the Leader) until it has injected faults of them or, when soak is positive, for that
// long, checking the invariants after each, then closes every survivor and checks what
// each reported.
func chaos(t *testing.T, n, faults int, soak time.Duration) {
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	dir, err := os.MkdirTemp("", "")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	up, err := upstream.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	r := &run{t: t, dir: dir, up: up, seed: seed, rng: rand.New(rand.NewPCG(seed, 0)), stop: make(chan struct{}), changed: make(chan struct{}), faults: map[string]int{}}
	t.Logf("chaos: %d members, seed %d", n, seed)

	defer func() { // whatever happens (a start that fails too), no member outlives the test
		for _, p := range r.procs {
			p.Kill()
		}
	}()
	for range n {
		r.start()
	}
	pushed := make(chan struct{})
	go r.pusher(pushed)
	defer func() { close(r.stop); <-pushed }()

	leader := r.stable(n, time.Time{})
	began := time.Now()
	for i := 0; ; i++ {
		if soak > 0 && time.Since(began) > soak || soak == 0 && i >= faults {
			break
		}
		var reconnected time.Time
		switch x := r.rng.IntN(10); {
		case x < 6:
			r.kill(leader)
		case x < 8:
			reconnected = r.pause(leader)
		default:
			r.close(leader)
		}
		leader = r.stable(n, reconnected)
		r.checkLeadership()
	}

	// The end: every survivor closes and proves it leaked nothing.
	finals := map[*proc]event{}
	for _, p := range r.live() {
		_ = p.CloseInput()
	}
	for _, p := range r.live() {
		select {
		case <-p.Done():
		case <-time.After(waitLimit):
			r.fail("member pid %d did not exit after Close", p.pid)
		}
		e, ok := p.last("final")
		if !ok {
			r.fail("member pid %d exited without its final report: %v", p.pid, p.ProcessState())
		}
		finals[p] = e
	}
	r.checkViolations()
	r.up.Judged()
	r.checkLeadership()
	for p, e := range finals {
		if e.Leak != "" {
			r.fail("member pid %d leaked after Close: %s", p.pid, e.Leak)
		}
	}
	// Every member's last word on its calls: the final report of a survivor, the last
	// tally of one that was killed.
	calls := map[string]int{}
	var overrun time.Duration
	for _, p := range r.procs {
		e, ok := p.last("final")
		if !ok {
			e, _ = p.last("tally")
		}
		for k, v := range e.Calls {
			calls[k] += v
		}
		overrun = max(overrun, time.Duration(e.MaxOverrunN))
	}
	r.report(time.Since(began), calls, overrun)
}

func (r *run) kill(p *proc) {
	r.t.Helper()
	r.faults["SIGKILL"]++
	r.log = append(r.log, fmt.Sprintf("SIGKILL %d at %s", p.pid, time.Now().Format(time.StampMicro)))
	p.mu.Lock()
	p.killed = time.Now()
	at := p.killed
	p.mu.Unlock()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		r.fail("SIGKILL %d: %v", p.pid, err)
	}
	r.failover = append(r.failover, r.probe(at, p))
	var next time.Time
	r.waitFor("a new leader", func() string {
		for _, q := range r.leaders() {
			if e, _ := q.last("role"); time.Unix(0, e.At).After(at) {
				next = time.Unix(0, e.At)
				return ""
			}
		}
		return "no leader elected after the kill"
	})
	r.elected = append(r.elected, next.Sub(at))
	<-p.Done()
	r.start()
}

// pause stops the Leader for longer than the heartbeat timeout: Followers drop it, and
// nobody may take its place (it holds the lock). When it continues it must find that
// its Followers left, serve them again when they reconnect, and still be the only one.
func (r *run) pause(p *proc) (continued time.Time) {
	r.t.Helper()
	r.faults["SIGSTOP+SIGCONT"]++
	r.log = append(r.log, fmt.Sprintf("SIGSTOP %d at %s", p.pid, time.Now().Format(time.StampMicro)))
	term := func() uint64 { e, _ := p.last("role"); return e.Term }()
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		r.fail("SIGSTOP %d: %v", p.pid, err)
	}
	time.Sleep(6 * heartbeat)
	for _, q := range r.live() {
		if e, _ := q.last("role"); e.Role == "leader" && q != p || e.Term > term {
			r.fail("member pid %d is %s in term %d while the leader (term %d) was stopped", q.pid, e.Role, e.Term, term)
		}
	}
	continued = time.Now()
	if err := p.Signal(syscall.SIGCONT); err != nil {
		r.fail("SIGCONT %d: %v", p.pid, err)
	}
	return continued
}

// close has the Leader leave gracefully (Client.Close): the handover.
func (r *run) close(p *proc) {
	r.t.Helper()
	r.faults["Close"]++
	r.log = append(r.log, fmt.Sprintf("Close %d at %s", p.pid, time.Now().Format(time.StampMicro)))
	at := time.Now()
	_ = p.CloseInput()
	r.handover = append(r.handover, r.probe(at, p))
	select {
	case <-p.Done():
	case <-time.After(waitLimit):
		r.fail("the leader (pid %d) did not exit after Close", p.pid)
	}
	if e, ok := p.last("final"); !ok || e.Leak != "" {
		r.fail("the leader that closed (pid %d) reported %+v", p.pid, e)
	}
	r.start()
}

func (r *run) report(took time.Duration, calls map[string]int, overrun time.Duration) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "chaos: %d faults in %v (seed %d):", sum(r.faults), took.Round(time.Millisecond), r.seed)
	for _, k := range sortedKeys(r.faults) {
		fmt.Fprintf(&b, " %s %d,", k, r.faults[k])
	}
	fmt.Fprintf(&b, "\n  SIGKILL -> first invoke served: %s\n  SIGKILL -> next leader's term: %s\n  Close -> first invoke served: %s\n  calls:",
		dist(r.failover), dist(r.elected), dist(r.handover))
	for _, k := range sortedKeys(calls) {
		fmt.Fprintf(&b, " %s %d,", k, calls[k])
	}
	fmt.Fprintf(&b, "\n  latest return past a deadline: %v; upstream connections: %d in all, at most %d at once",
		overrun.Round(time.Millisecond), r.up.TotalConns(), r.up.MaxConns())
	r.t.Log(b.String())
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sortedKeys(m map[string]int) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// dist formats min/p50/p99/max.
func dist(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	r := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
	return fmt.Sprintf("n=%d min %s p50 %s p99 %s max %s", len(s), r(s[0]), r(q(0.5)), r(q(0.99)), r(s[len(s)-1]))
}

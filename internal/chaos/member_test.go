//go:build !windows

package chaos

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/internal/member"
)

// A member is the test binary re-executed as an internal/member program. Besides what
// every member does, it runs a constant load (invokes, publishes, subscribe/close
// churn), checks what it can see from inside (call outcomes, deadlines, per-term
// subscription continuity, replay to late subscribers), and reports on stdout as JSON
// lines of its own (tally, violation, final). Its operations: "probe" (answered once an
// invoke succeeds) and "observe" (its Stats and what it saw of the stream). When its
// stdin ends it stops the load, closes and checks that it leaked nothing (final).

// event is one line a member writes, as the controller reads it.
type event struct {
	Ev   string `json:"ev"`
	PID  int    `json:"pid"`
	At   int64  `json:"at,omitempty"` // unix nanoseconds
	Role string `json:"role,omitempty"`
	Term uint64 `json:"term,omitempty"`
	What string `json:"what,omitempty"` // violation

	// stats: the answer to observe
	Followers int    `json:"followers,omitempty"`
	Conn      int    `json:"conn,omitempty"` // the upstream connection of the latest message
	OnConn    int    `json:"onConn,omitempty"`
	Dropped   uint64 `json:"dropped,omitempty"`

	// final
	Calls       map[string]int `json:"calls,omitempty"`
	MaxOverrunN int64          `json:"maxOverrun,omitempty"` // nanoseconds past a deadline, at most
	Leak        string         `json:"leak,omitempty"`
}

// Call outcomes a member counts. Anything else is a violation.
const (
	outcomeOK      = "ok"
	outcomeLost    = "leader-lost"
	outcomeTimeout = "timeout"
)

const (
	callTimeout = 2 * time.Second
	// overrunLimit is how far past its deadline a call may return before it counts as
	// hung: scheduling on a loaded 2-core machine under -race, not library slack.
	overrunLimit = 2 * time.Second
)

// checker is what a member adds to the member program: its load and its checks.
type checker struct {
	m *member.Member
	c *cluster.Client

	lastSeq atomic.Int64 // the latest sequence number the steady subscriber saw

	seqMu sync.Mutex
	// joins counts, per term, this member's role changes to leader or follower: the
	// first is its subscription in that term, each later one a re-subscription (it
	// reconnected to the same Leader after a heartbeat timeout).
	joins  map[uint64]int
	conn   int      // the upstream connection of the latest message: one per term
	term   uint64   // the term conn belongs to (the member's term at its first message; 0 if it was electing)
	last   int      // the latest sequence number on conn
	onConn int      // messages seen on conn
	breaks []string // discontinuities on conn, each allowed only by a re-subscription

	callsMu    sync.Mutex
	calls      map[string]int
	maxOverrun time.Duration

	stallMu sync.Mutex
	stalls  []stall // recent ones

	// Set by setup and joined, before any Command.
	steady    *cluster.Subscription
	stopLoad  context.CancelFunc
	wg        sync.WaitGroup // the load
	fdsBefore int
	leakOpt   goleak.Option
}

// stall is a time this process was not scheduled: a 10 ms ticker came late.
type stall struct{ from, to time.Time }

// watchStalls records when this process stands still (a loaded machine, a stopped
// process) until ctx ends.
func (m *checker) watchStalls(ctx context.Context) {
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	prev := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if late := now.Sub(prev) - tick; late > 20*time.Millisecond {
				m.stallMu.Lock()
				m.stalls = append(m.stalls, stall{prev, now})
				if len(m.stalls) > 1024 {
					m.stalls = m.stalls[512:]
				}
				m.stallMu.Unlock()
			}
			prev = now
		}
	}
}

// stalled returns how long this process stood still between from and to.
func (m *checker) stalled(from, to time.Time) time.Duration {
	m.stallMu.Lock()
	defer m.stallMu.Unlock()
	var d time.Duration
	for _, s := range m.stalls {
		a, b := s.from, s.to
		if from.After(a) {
			a = from
		}
		if b.After(to) {
			b = to
		}
		if b.After(a) {
			d += b.Sub(a)
		}
	}
	return d
}

func (m *checker) emit(e event) {
	e.PID = os.Getpid()
	if e.At == 0 {
		e.At = time.Now().UnixNano()
	}
	m.m.Emit(e)
}

func (m *checker) violation(format string, args ...any) {
	m.emit(event{Ev: "violation", What: fmt.Sprintf(format, args...)})
}

// outcome classifies a call's result; anything but success, ErrLeaderLost or
// ErrTimeout, or a return long past the deadline, is a violation.
func (m *checker) outcome(op string, start time.Time, deadline time.Time, err error) {
	kind := outcomeOK
	switch {
	case err == nil:
	case errors.Is(err, cluster.ErrLeaderLost):
		kind = outcomeLost
	case errors.Is(err, cluster.ErrTimeout):
		kind = outcomeTimeout
	default:
		m.violation("%s returned an error that is neither ErrLeaderLost nor ErrTimeout: %v", op, err)
		kind = "other"
	}
	end := time.Now()
	over := end.Sub(deadline)
	// A process that the machine does not run cannot return on time: the time this
	// member stood still during the call is forgiven, no more.
	if stalled := m.stalled(start, end); over > overrunLimit+stalled {
		m.violation("%s started at %s returned %s after its deadline, though this process stood still for only %s meanwhile (%v)",
			op, start.Format(time.RFC3339Nano), over, stalled, err)
	}
	m.callsMu.Lock()
	m.calls[op+" "+kind]++
	m.maxOverrun = max(m.maxOverrun, over)
	m.callsMu.Unlock()
}

// onSeq is the steady subscriber: every message the upstream pushes carries the
// number of the upstream connection (one per leadership term) and a global sequence
// number. On one connection the sequence must be contiguous: a gap or a repeat is
// allowed only after this member re-subscribed (a reconnection to the same Leader
// after a heartbeat timeout), at most one per re-subscription, and never backwards.
func (m *checker) onSeq(msg cluster.Message) {
	var conn, seq int
	if _, err := fmt.Sscanf(string(msg.Data), "conn=%d seq=%d", &conn, &seq); err != nil {
		m.violation("malformed message %q", msg.Data)
		return
	}
	m.seqMu.Lock()
	defer m.seqMu.Unlock()
	switch {
	case conn < m.conn:
		m.violation("message from upstream connection %d after one from %d: terms went backwards", conn, m.conn)
	case conn > m.conn:
		m.judgeLocked()
		m.conn, m.term, m.last, m.onConn, m.breaks = conn, m.c.Role().Term, seq, 1, nil
	default:
		switch {
		case seq == m.last+1:
		case seq < m.last:
			m.violation("on upstream connection %d, seq %d came after %d: out of order", conn, seq, m.last)
		default: // a repeat (replay of the latest) or a gap
			m.breaks = append(m.breaks, fmt.Sprintf("%d after %d", seq, m.last))
		}
		m.last = seq
		m.onConn++
	}
	m.lastSeq.Store(int64(seq))
}

// judgeLocked checks the finished (or final) stretch of conn: its discontinuities
// must not outnumber the re-subscriptions of its term. It runs when the next term's
// messages begin, or at exit, when the term's role changes have all been reported
// (OnRoleChange runs asynchronously: judging at the discontinuity itself could count
// a re-subscription that is not reported yet).
func (m *checker) judgeLocked() {
	if m.conn == 0 || m.term == 0 {
		// No stretch yet; or its first message reached the callback after this member
		// had already lost that connection's Leader (callbacks run on their own
		// goroutine), so the term it came through is unknown: nothing to judge by.
		return
	}
	if resubs := m.joins[m.term] - 1; len(m.breaks) > resubs {
		m.violation("on upstream connection %d (term %d): %d discontinuities (%s) but %d re-subscriptions to explain them",
			m.conn, m.term, len(m.breaks), strings.Join(m.breaks, ", "), resubs)
	}
}

func memberMain(cfg member.Config) int {
	m := &checker{calls: map[string]int{}, joins: map[uint64]int{}}
	return member.Main(cfg, member.Program{
		Setup:        m.setup,
		OnRoleChange: m.onRoleChange,
		Joined:       m.joined,
		Ops:          map[string]member.Op{"probe": m.probe, "observe": m.observe},
		Leave:        m.leave,
	})
}

// setup takes the baselines of the leak checks, before Join.
func (m *checker) setup(mm *member.Member) error {
	m.m = mm
	// The runtime's network poller opens its descriptors once, at first use, and keeps
	// them: start it before counting.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	m.fdsBefore = countFDs()
	m.leakOpt = goleak.IgnoreCurrent()
	return nil
}

func (m *checker) onRoleChange(r cluster.RoleInfo) {
	if r.Role == cluster.RoleLeader || r.Role == cluster.RoleFollower {
		m.seqMu.Lock()
		m.joins[r.Term]++
		m.seqMu.Unlock()
	}
}

// joined subscribes the steady subscriber and starts the load.
func (m *checker) joined(mm *member.Member) error {
	c := mm.Client()
	m.c = c
	steady, err := c.Subscribe(context.Background(), "seq", m.onSeq)
	if err != nil {
		return fmt.Errorf("steady subscribe: %w", err)
	}
	m.steady = steady
	load, stopLoad := context.WithCancel(context.Background())
	m.stopLoad = stopLoad
	every := func(d time.Duration, fn func()) {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				select {
				case <-load.Done():
					return
				case <-t.C:
					fn()
				}
			}
		}()
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.watchStalls(load)
	}()
	every(500*time.Millisecond, func() { // the tally so far, in case this member is killed
		m.callsMu.Lock()
		e := event{Ev: "tally", Calls: maps.Clone(m.calls), MaxOverrunN: int64(m.maxOverrun)}
		m.callsMu.Unlock()
		m.emit(e)
	})
	var n atomic.Int64
	every(5*time.Millisecond, func() { // invokes
		want := strconv.FormatInt(n.Add(1), 10)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		out, err := c.Invoke(ctx, "echo", cluster.Message{Data: []byte(want)})
		if err == nil && string(out.Data) != want {
			m.violation("invoke echo %q answered %q", want, out.Data)
		}
		m.outcome("invoke", start, start.Add(callTimeout), err)
	})
	every(20*time.Millisecond, func() { // publishes
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		err := c.Publish(ctx, "pub", cluster.Message{Data: []byte("x")})
		m.outcome("publish", start, start.Add(callTimeout), err)
	})
	every(50*time.Millisecond, func() { // late subscribers come and go
		if m.lastSeq.Load() == 0 {
			return
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		s, err := c.Subscribe(ctx, "seq", func(cluster.Message) {})
		m.outcome("subscribe", start, start.Add(callTimeout), err)
		if err != nil {
			return
		}
		// The topic has a latest value (the steady subscriber saw one): it is replayed
		// to a late subscriber before Subscribe returns.
		expired, cancelExpired := context.WithCancel(context.Background())
		cancelExpired()
		if _, err := s.First(expired); err != nil {
			m.violation("a late subscriber was not replayed the topic's latest value: %v", err)
		}
		start = time.Now()
		m.outcome("unsubscribe", start, start.Add(callTimeout), s.Close())
	})
	return nil
}

// probe answers once an invoke succeeded: the time to the first call served after a
// fault.
func (m *checker) probe(context.Context, *member.Member, member.Command) (any, error) {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		_, err := m.c.Invoke(ctx, "echo", cluster.Message{Data: []byte("probe")})
		cancel()
		if err == nil {
			return nil, nil
		}
	}
	return nil, errors.New("no invoke succeeded for 60 s after a fault")
}

// observe answers the member's Stats and what it saw of the stream.
func (m *checker) observe(context.Context, *member.Member, member.Command) (any, error) {
	st := m.c.Stats()
	m.seqMu.Lock()
	conn, onConn := m.conn, m.onConn
	m.seqMu.Unlock()
	return event{Role: st.Role.String(), Term: st.Term, Followers: st.Followers, Conn: conn, OnConn: onConn, Dropped: st.Dropped}, nil
}

// leave stops the load, closes, and reports whether anything leaked (final).
func (m *checker) leave(*member.Member) int {
	m.stopLoad()
	m.wg.Wait()
	final := event{Ev: "final"}
	if d := m.c.Stats().Dropped; d > 0 {
		m.violation("%d messages were dropped by a subscription queue: the continuity check is void", d)
	}
	_ = m.steady.Close()
	m.seqMu.Lock()
	m.judgeLocked()
	m.seqMu.Unlock()
	if err := m.c.Close(); err != nil {
		m.violation("close: %v", err)
	}
	m.callsMu.Lock()
	final.Calls, final.MaxOverrunN = m.calls, int64(m.maxOverrun)
	m.callsMu.Unlock()
	if err := goleak.Find(m.leakOpt); err != nil {
		final.Leak = err.Error()
	}
	// Descriptors are closed by Close, not by finalizers; allow the runtime a moment
	// for the ones it closes asynchronously (pollers), no more.
	for deadline := time.Now().Add(10 * time.Second); countFDs() != m.fdsBefore && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if after := countFDs(); after != m.fdsBefore {
		final.Leak += fmt.Sprintf("open descriptors: %d before Join, %d after Close", m.fdsBefore, after)
	}
	m.emit(final)
	return 0
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

package cluster

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// counters are a Client's statistics, all atomic: the call path only adds to them.
type counters struct {
	calls, errors, timeouts, leaderLost atomic.Uint64
	reconnects, failovers               atomic.Uint64
	lastFailover                        atomic.Int64
	followers                           atomic.Int64
	panics                              atomic.Uint64
	ops                                 [numOps]opCounters
	// bytes of the connections that ended; with the live ones' (backend.bytes), under
	// bytesMu, so that a connection that ends is counted once, and counters never go
	// back. Lock order: bytesMu, then epochMu or a call to the Leader's owner.
	bytesMu           sync.Mutex
	bytesIn, bytesOut uint64
}

// endedBytes adds a connection that ended to the byte counters. Call it under bytesMu.
func (c *counters) endedBytes(in, out uint64) { c.bytesIn, c.bytesOut = c.bytesIn+in, c.bytesOut+out }

// opKind is a kind of call, for Stats.Ops.
type opKind uint8

const (
	opInvoke opKind = iota
	opOneway
	opPublish
	opSubscribe
	opRegister
	numOps
)

// opNames name the kinds of call, in errors and in Stats.Ops.
var opNames = [numOps]string{"invoke", "invoke-oneway", "publish", "subscribe", "register"}

func (k opKind) String() string { return opNames[k] }

// latencyBuckets are the upper bounds of Stats.Ops' latency histogram: fixed, so that
// counting a call is a short scan and an atomic add, and the same on every member.
var latencyBuckets = [...]time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// LatencyBuckets returns the upper bounds of the latency histogram in Stats.Ops: a
// call that took d is counted in the first bucket whose bound is at least d, or in the
// last, unbounded, one.
func LatencyBuckets() []time.Duration { return append([]time.Duration(nil), latencyBuckets[:]...) }

// opCounters count one kind of call.
type opCounters struct {
	calls, errors, timeouts atomic.Uint64
	latency                 [len(latencyBuckets) + 1]atomic.Uint64
	nanos                   atomic.Uint64 // the latencies added up
}

// done counts a call of this kind that took d and ended with err.
func (o *opCounters) done(d time.Duration, err error, timeout bool) {
	o.calls.Add(1)
	if err != nil {
		o.errors.Add(1)
		if timeout {
			o.timeouts.Add(1)
		}
	}
	i := 0
	for i < len(latencyBuckets) && d > latencyBuckets[i] {
		i++
	}
	o.latency[i].Add(1)
	o.nanos.Add(uint64(max(d, 0)))
}

// OpStats counts one kind of call a member made (see Stats.Ops).
type OpStats struct {
	Calls, Errors, Timeouts uint64
	// Latency counts the calls by how long they took, errors included: Latency[i]
	// those that took at most LatencyBuckets()[i] and more than the bound before it;
	// the last element those that took longer than every bound.
	Latency []uint64
	// LatencySum is the latencies of those calls added up (so LatencySum divided by the
	// calls in Latency is their mean); nanoseconds in JSON. It is the sum a Prometheus
	// histogram exports beside its buckets.
	LatencySum time.Duration
}

// Stats is a snapshot of a member's state and counters.
type Stats struct {
	RoleInfo
	Name, Dir string
	// Transport is the transport in use (TransportUnix or TransportTCP, never
	// TransportAuto), TransportReason why it was chosen, and Address where the Leader
	// is reached (socket path, or 127.0.0.1:port).
	Transport                Transport
	TransportReason, Address string
	// Followers is the number of connected Followers (on the Leader).
	Followers int
	// Subscriptions is the number of live local Subscriptions.
	Subscriptions int
	// Registrations is the number of live Registrations this member made.
	Registrations int
	// Calls counts Invoke, InvokeOneway, Publish, Subscribe and Register calls; Errors
	// those that failed, of which Timeouts with ErrTimeout and LeaderLost with
	// ErrLeaderLost.
	Calls, Errors, Timeouts, LeaderLost uint64
	// Ops breaks the calls down by kind ("invoke", "invoke-oneway", "publish",
	// "subscribe", "register"), with a histogram of their latency as the caller saw it.
	Ops map[string]OpStats
	// Reconnects counts connections made to a Leader after the first; Failovers the
	// Leaders lost (connection ended or handed over).
	Reconnects, Failovers uint64
	// LastFailover is the time from losing the last Leader to being served again (as
	// Leader or Follower of the next one, with its subscriptions and registrations
	// restored). It is recorded once they are, which may be shortly after Role
	// reports the new role.
	LastFailover time.Duration
	// Dropped counts messages this member dropped instead of delivering: a local
	// subscriber fell behind, a shared message arrived after its last subscriber left,
	// or a message was too large for this member's limits (MaxBody, MaxBlob) or could
	// not be decoded.
	Dropped uint64
	// Refused counts, by kind, the peers and requests this member refused, and the
	// peers' failures it noted, while it led: a Limits field name ("MaxConnsPerUID",
	// "MaxSubscriptions", "FrameTimeout", ...), "HeartbeatTimeout" (Config's: a peer
	// that went silent), "unauthorized" (the peer policy), "handshake" (a failed
	// handshake), "protocol" and "too-large" (a peer that broke the protocol),
	// "connection" (a connection that failed otherwise), "undelivered" (a message too
	// large for a Follower's MaxBody), "oneway" (a oneway request that could not be
	// read), "accept" (the Leader's accept failed). Each kind is logged once, then
	// summarised every 10 s. Nil when there were none.
	Refused map[string]uint64
	// BytesIn and BytesOut count the bytes this member read from and wrote to its
	// connections: a Follower's to its Leaders, a Leader's to its Followers.
	BytesIn, BytesOut uint64
	// Panics counts panics recovered in this member's application code: its Service,
	// NewService and Withdrawer while it led, its subscription callbacks and
	// OnRoleChange. Each was logged at ERROR with its stack.
	Panics uint64
}

// MarshalJSON writes Stats as a JSON object with the field names above. Role is its
// name ("leader"), At is RFC 3339, and LastFailover is a Go duration string ("4.43ms",
// "0s" when there was none), so that the output reads without a decoder. UnmarshalJSON
// reads it back.
func (s Stats) MarshalJSON() ([]byte, error) {
	type plain Stats // without this method
	return json.Marshal(struct {
		plain
		LastFailover string
	}{plain(s), s.LastFailover.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *Stats) UnmarshalJSON(b []byte) error {
	type plain Stats
	var v struct {
		*plain
		LastFailover string
	}
	v.plain = (*plain)(s)
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	s.LastFailover = 0
	if v.LastFailover != "" {
		d, err := time.ParseDuration(v.LastFailover)
		if err != nil {
			return fmt.Errorf("cluster: Stats.LastFailover: %w", err)
		}
		s.LastFailover = d
	}
	return nil
}

// Stats returns a snapshot of the member's role and counters.
func (c *Client) Stats() Stats {
	st := c.stats0()
	c.stats.bytesMu.Lock()
	st.BytesIn, st.BytesOut = c.stats.bytesIn, c.stats.bytesOut
	if b := c.currentBackend(); b != nil {
		in, out := b.bytes()
		st.BytesIn += in
		st.BytesOut += out
	}
	c.stats.bytesMu.Unlock()
	return st
}

func (c *Client) stats0() Stats {
	return Stats{
		RoleInfo:        c.Role(),
		Name:            c.cfg.Name,
		Dir:             c.cfg.Dir,
		Transport:       c.trk.Load().transport(),
		TransportReason: c.trk.Load().why,
		Address:         c.trk.Load().where,
		Followers:       int(c.stats.followers.Load()),
		Subscriptions:   c.subs.count(),
		Registrations:   c.regs.count(),
		Calls:           c.stats.calls.Load(),
		Errors:          c.stats.errors.Load(),
		Timeouts:        c.stats.timeouts.Load(),
		LeaderLost:      c.stats.leaderLost.Load(),
		Reconnects:      c.stats.reconnects.Load(),
		Failovers:       c.stats.failovers.Load(),
		LastFailover:    time.Duration(c.stats.lastFailover.Load()),
		Dropped:         c.subs.dropped.Load(),
		Panics:          c.stats.panics.Load(),
		Ops:             c.stats.opStats(),
		Refused:         c.refused.counts(),
	}
}

// opStats snapshots the per-kind counters.
func (c *counters) opStats() map[string]OpStats {
	out := make(map[string]OpStats, numOps)
	for k := range numOps {
		o := &c.ops[k]
		st := OpStats{Calls: o.calls.Load(), Errors: o.errors.Load(), Timeouts: o.timeouts.Load(), Latency: make([]uint64, len(o.latency))}
		for i := range o.latency {
			st.Latency[i] = o.latency[i].Load()
		}
		st.LatencySum = time.Duration(o.nanos.Load())
		out[k.String()] = st
	}
	return out
}

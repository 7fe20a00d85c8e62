// Package prometheus exports a cluster Client's Stats as Prometheus metrics.
//
// It is a module of its own, so that the core module does not depend on client_golang.
// Its name is that of client_golang's package; import it under another:
//
//	import clusterprom "github.com/cluster-client-go/cluster/prometheus"
//
//	prometheus.MustRegister(clusterprom.NewCollector(c))
//	http.Handle("/metrics", promhttp.Handler())
//
// The Collector reads Client.Stats when it is scraped, and at no other time: it starts
// no goroutine. Every metric carries the constant label name (Config.Name), so that the
// collectors of several Clients can share a registry; the other labels, op and kind,
// take a small fixed set of values. docs/metrics.md lists the metrics.
package prometheus

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cluster-client-go/cluster"
)

// Collector is a prometheus.Collector of one Client's Stats. Make it with NewCollector.
type Collector struct {
	c *cluster.Client

	info, term, leader, followers, subscriptions, registrations *prometheus.Desc
	calls, callErrors, callTimeouts, callDuration               *prometheus.Desc
	leaderLost, reconnects, failovers, lastFailover             *prometheus.Desc
	dropped, panics, refused                                    *prometheus.Desc
	readBytes, writtenBytes                                     *prometheus.Desc

	// bounds are the histogram's bucket bounds in seconds (cluster.LatencyBuckets).
	bounds []float64
}

// NewCollector returns a Collector of c's Stats, to register with a
// prometheus.Registerer. Its metrics carry the label name="<Config.Name>". It panics if
// c is nil.
func NewCollector(c *cluster.Client) *Collector {
	if c == nil {
		panic("cluster/prometheus: NewCollector of a nil Client")
	}
	labels := prometheus.Labels{"name": c.Stats().Name}
	desc := func(name, help string, variable ...string) *prometheus.Desc {
		return prometheus.NewDesc("cluster_"+name, help, variable, labels)
	}
	col := &Collector{
		c: c,

		info: desc("info", "Always 1: the member's role (leader, follower, electing, closed) and transport (unix, tcp) are its labels.",
			"role", "transport"),
		term:          desc("term", "The leadership term this member is in: it grows with every new Leader; 0 while electing and once closed."),
		leader:        desc("leader", "1 while this member is the Leader, 0 otherwise."),
		followers:     desc("followers", "Followers connected to this member while it leads; 0 on a Follower."),
		subscriptions: desc("subscriptions", "Live subscriptions made by this member."),
		registrations: desc("registrations", "Live registrations made by this member."),

		calls:        desc("calls_total", "Calls this member made (Invoke, InvokeOneway, Publish, Subscribe, Register), by kind.", "op"),
		callErrors:   desc("call_errors_total", "Calls this member made that failed, by kind; timeouts included.", "op"),
		callTimeouts: desc("call_timeouts_total", "Calls this member made that failed with ErrTimeout, by kind.", "op"),
		callDuration: desc("call_duration_seconds", "How long this member's calls took as the caller saw them, failed ones included, by kind.", "op"),

		leaderLost:   desc("leader_lost_total", "Calls this member made that failed with ErrLeaderLost: the Leader was lost while they were in flight."),
		reconnects:   desc("reconnects_total", "Connections this member made to a Leader after its first."),
		failovers:    desc("failovers_total", "Leaders this member lost: their connection ended, or they handed over."),
		lastFailover: desc("last_failover_seconds", "Time from losing the last Leader to being served again, as Leader or Follower of the next one; 0 before the first failover."),
		dropped:      desc("dropped_messages_total", "Messages this member dropped instead of delivering them: a subscriber fell behind, or a message was too large or could not be decoded."),
		panics:       desc("panics_total", "Panics recovered in this member's application code: its Service while it led, its subscription callbacks, OnRoleChange."),
		refused:      desc("refused_total", "Peers and requests this member refused, and peers' failures it noted, while it led, by kind: a Limits field, HeartbeatTimeout, unauthorized, handshake, protocol, too-large, connection, undelivered, oneway or accept.", "kind"),
		readBytes:    desc("read_bytes_total", "Bytes this member read from its connections: a Follower's from its Leaders, a Leader's from its Followers."),
		writtenBytes: desc("written_bytes_total", "Bytes this member wrote to its connections: a Follower's to its Leaders, a Leader's to its Followers."),
	}
	for _, d := range cluster.LatencyBuckets() {
		col.bounds = append(col.bounds, d.Seconds())
	}
	return col
}

// Describe sends the descriptions of every metric the Collector may send.
func (col *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		col.info, col.term, col.leader, col.followers, col.subscriptions, col.registrations,
		col.calls, col.callErrors, col.callTimeouts, col.callDuration,
		col.leaderLost, col.reconnects, col.failovers, col.lastFailover,
		col.dropped, col.panics, col.refused, col.readBytes, col.writtenBytes,
	} {
		ch <- d
	}
}

// Collect reads the Client's Stats and sends them as metrics.
func (col *Collector) Collect(ch chan<- prometheus.Metric) {
	st := col.c.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	gauge(col.info, 1, st.Role.String(), st.Transport.String())
	gauge(col.term, float64(st.Term))
	leader := 0.0
	if st.Role == cluster.RoleLeader {
		leader = 1
	}
	gauge(col.leader, leader)
	gauge(col.followers, float64(st.Followers))
	gauge(col.subscriptions, float64(st.Subscriptions))
	gauge(col.registrations, float64(st.Registrations))

	for _, op := range sortedKeys(st.Ops) {
		o := st.Ops[op]
		counter(col.calls, o.Calls, op)
		counter(col.callErrors, o.Errors, op)
		counter(col.callTimeouts, o.Timeouts, op)
		ch <- col.histogram(o, op)
	}

	counter(col.leaderLost, st.LeaderLost)
	counter(col.reconnects, st.Reconnects)
	counter(col.failovers, st.Failovers)
	gauge(col.lastFailover, st.LastFailover.Seconds())
	counter(col.dropped, st.Dropped)
	counter(col.readBytes, st.BytesIn)
	counter(col.writtenBytes, st.BytesOut)
	counter(col.panics, st.Panics)
	for _, kind := range sortedKeys(st.Refused) {
		counter(col.refused, st.Refused[kind], kind)
	}
}

// histogram makes the call_duration_seconds histogram of one kind of call: the
// cumulative counts of OpStats.Latency at the bounds of cluster.LatencyBuckets, the
// count of every call (the last, unbounded, bucket included) and the sum of their
// latencies (OpStats.LatencySum).
func (col *Collector) histogram(o cluster.OpStats, op string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(col.bounds))
	var count uint64
	for i, n := range o.Latency {
		count += n
		if i < len(col.bounds) {
			buckets[col.bounds[i]] = count
		}
	}
	return prometheus.MustNewConstHistogram(col.callDuration, count, o.LatencySum.Seconds(), buckets, op)
}

// sortedKeys returns m's keys in order, so that the metrics are sent in the same order
// at each scrape.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

var _ prometheus.Collector = (*Collector)(nil)

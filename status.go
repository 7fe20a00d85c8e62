package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cluster-client-go/cluster/frame"
)

// Status is a Leader's account of itself, its Followers and its topics, as of At: what
// Client.LeaderStatus, Inspect and the clusterctl command report. Its JSON form (the
// field tags below) is what `clusterctl status -json` prints; docs/operating.md
// describes it. Durations are in nanoseconds, times in RFC 3339.
type Status struct {
	Name      string    `json:"name"`
	Identity  string    `json:"identity,omitempty"` // Config.Identity
	Library   string    `json:"library"`            // the Leader's version of this module, "(devel)" when unknown
	Protocol  int       `json:"protocol"`           // the wire protocol version
	Transport Transport `json:"transport"`
	Address   string    `json:"address"` // the socket path, or 127.0.0.1:port
	At        time.Time `json:"at"`

	Leader    LeaderInfo     `json:"leader"`
	Followers []FollowerInfo `json:"followers"` // by connection time; observers (status tools) are not Followers
	Topics    []TopicInfo    `json:"topics"`    // by name
	Totals    StatusTotals   `json:"totals"`
}

// LeaderInfo describes the Leader's process and term.
type LeaderInfo struct {
	PID     int       `json:"pid"`     // in the Leader's pid namespace
	UID     int       `json:"uid"`     // effective uid; -1 where unknown
	Started time.Time `json:"started"` // when the process loaded this library
	Term    uint64    `json:"term"`
	Since   time.Time `json:"since"` // when this term began
}

// FollowerInfo describes one Follower's connection as the Leader sees it.
type FollowerInfo struct {
	PID           int       `json:"pid"` // as the Follower reported it (advisory: pid namespaces)
	UID           int       `json:"uid"` // from the socket's peer credentials; -1 where unknown (TCP)
	ConnectedAt   time.Time `json:"connected_at"`
	Served        uint64    `json:"served"`    // requests served, answered or one-way
	Errors        uint64    `json:"errors"`    // of them, answered with an error
	InFlight      int       `json:"in_flight"` // being served now
	Subscriptions int       `json:"subscriptions"`
	Registrations int       `json:"registrations"`
	BytesIn       uint64    `json:"bytes_in"`  // read from the Follower
	BytesOut      uint64    `json:"bytes_out"` // written to it
}

// TopicInfo describes one topic of the Leader's subscription table.
type TopicInfo struct {
	Name string `json:"name"`
	// Subscribers counts the processes with a broadcast subscription of the topic, the
	// Leader's own included; Shared those with a shared one.
	Subscribers int `json:"subscribers"`
	Shared      int `json:"shared"`
	// Subscribed says the Service holds the topic's one subscription.
	Subscribed bool `json:"subscribed"`
	// LatestBytes is the size of the latest message (Data and Blob), LatestAge how long
	// ago it arrived; both 0 when there is none.
	LatestBytes int           `json:"latest_bytes"`
	LatestAge   time.Duration `json:"latest_age_ns"`
}

// StatusTotals sums the rest.
type StatusTotals struct {
	Followers     int               `json:"followers"`
	Observers     int               `json:"observers"`
	Topics        int               `json:"topics"`
	Subscriptions int               `json:"subscriptions"` // of Followers, topic by topic
	Registrations int               `json:"registrations"` // held for Followers
	Served        uint64            `json:"served"`
	Errors        uint64            `json:"errors"`
	BytesIn       uint64            `json:"bytes_in"`
	BytesOut      uint64            `json:"bytes_out"`
	Refused       map[string]uint64 `json:"refused,omitempty"` // Stats.Refused of the Leader
	Panics        uint64            `json:"panics"`            // Stats.Panics of the Leader
}

// processStarted is when this process loaded the library: Status's Leader.Started.
var processStarted = time.Now()

// libraryVersion is this module's version in the running binary.
var libraryVersion = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	const path = "github.com/cluster-client-go/cluster"
	if bi.Main.Path == path {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Replace.Version + " (replaced)"
			}
			return d.Version
		}
	}
	return "(devel)"
})

// report makes the Leader's Status.
func (l *leader) report() *Status {
	var st *Status
	if !l.call(func(ts *termState) { st = l.reportOn(ts) }) {
		st = l.reportOn(nil) // the term is over: no Followers, no topics
	}
	return st
}

// reportOn makes the Leader's Status from ts, on the term's owner (ts nil: none).
func (l *leader) reportOn(ts *termState) *Status {
	c := l.c
	st := &Status{
		Followers: []FollowerInfo{}, Topics: []TopicInfo{}, // [] rather than null in JSON
		Name: c.cfg.Name, Identity: c.cfg.Identity, Library: libraryVersion(), Protocol: int(frame.Version),
		Transport: c.trk.Load().transport(), Address: c.trk.Load().where, At: time.Now(),
		Leader: l.describe(),
	}
	if ts != nil {
		st.Totals.Observers = len(ts.observers)
		for _, pc := range ts.conns {
			fi := pc.info()
			st.Followers = append(st.Followers, fi)
			st.Totals.Subscriptions += fi.Subscriptions
			st.Totals.Registrations += fi.Registrations
			st.Totals.Served += fi.Served
			st.Totals.Errors += fi.Errors
			st.Totals.BytesIn += fi.BytesIn
			st.Totals.BytesOut += fi.BytesOut
		}
		for _, t := range ts.topics {
			st.Topics = append(st.Topics, t.info(st.At))
		}
	}
	slices.SortFunc(st.Followers, func(a, b FollowerInfo) int { return a.ConnectedAt.Compare(b.ConnectedAt) })
	slices.SortFunc(st.Topics, func(a, b TopicInfo) int { return strings.Compare(a.Name, b.Name) })
	st.Totals.Followers, st.Totals.Topics = len(st.Followers), len(st.Topics)
	st.Totals.Refused, st.Totals.Panics = c.refused.counts(), c.stats.panics.Load()
	return st
}

// info describes this Leader.
func (l *leader) describe() LeaderInfo {
	return LeaderInfo{PID: pid(), UID: os.Geteuid(), Started: processStarted, Term: l.term, Since: l.at}
}

// info describes the Follower of pc. Owner only.
func (pc *peerConn) info() FollowerInfo {
	p := pc.conn.Peer()
	uid := -1
	if p.Known {
		uid = int(p.UID)
	}
	in, out := pc.conn.Bytes()
	subs, regs := len(pc.subs), len(pc.regs)
	return FollowerInfo{
		PID: int(pc.hello.PID), UID: uid, ConnectedAt: pc.at,
		Served: pc.served.Load(), Errors: pc.failed.Load(), InFlight: len(pc.sem),
		Subscriptions: subs, Registrations: regs, BytesIn: in, BytesOut: out,
	}
}

// info describes topic t as of now. Owner only.
func (t *topic) info(now time.Time) TopicInfo {
	t.fan.Lock()
	defer t.fan.Unlock()
	ti := TopicInfo{Name: t.name, Subscribers: len(t.out.broadcast), Shared: len(t.out.shared), Subscribed: t.active}
	if latest := t.out.latest; t.out.has {
		ti.LatestBytes = len(latest.Data)
		if latest.Blob != nil {
			ti.LatestBytes += latest.Blob.Len()
		}
		ti.LatestAge = now.Sub(t.latestAt)
	}
	return ti
}

// LeaderStatus asks the Leader for its Status: its own process and term, each
// Follower's connection, each topic. On the Leader it is made at once; on a Follower it
// is one round trip. Between Leaders it waits for the next one, within ctx
// (Config.CallTimeout applies when ctx has no deadline).
func (c *Client) LeaderStatus(ctx context.Context) (*Status, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	var st *Status
	err := c.doLoop(ctx, "status", c.cfg.Name, func(b backend) error {
		var err error
		st, err = b.status(ctx)
		return err
	})
	return st, err
}

// decodeStatus reads a status document.
func decodeStatus(b []byte) (*Status, error) {
	st := new(Status)
	if err := decodeJSON(b, st); err != nil {
		return nil, fmt.Errorf("cluster: the leader's status document: %w: %w", ErrProtocol, err)
	}
	return st, nil
}

func decodeJSON(b []byte, v any) error { return json.Unmarshal(b, v) }

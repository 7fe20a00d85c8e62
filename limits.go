package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/ipc"
)

// Limits bound what a peer can make the Leader hold, so that a buggy Follower, or a
// process of another uid admitted by AllowUIDs or AllowGIDs, cannot starve the others.
// A zero field means its default (see DefaultLimits); a negative one means no limit,
// except for HandshakeTimeout and MaxNameLen, which are always bounded: a negative one
// means the default.
//
// A peer over a limit gets an error frame that names the limit (code "limit"; on a
// member, an error matching ErrLimit): a request over a per-connection limit is refused
// and the connection stays; a connection over a connection limit is refused before its
// handshake. The Leader logs the first refusal of each limit at once and the rest as one
// summary line every 10 s, and counts them all in Stats.Refused.
type Limits struct {
	// MaxConns bounds the connections the Leader holds at once, handshaking ones
	// included; uids other than the Leader's may hold at most three quarters of them.
	// Default 4096.
	MaxConns int
	// MaxConnsPerUID bounds the connections of each uid other than the Leader's own
	// (Followers admitted by AllowUIDs or AllowGIDs), so that another user cannot take
	// what the Leader's own uid needs. Default 256 (D-Bus: max_connections_per_user).
	MaxConnsPerUID int
	// MaxHandshaking bounds the connections accepted and not yet through the
	// handshake; uids other than the Leader's may hold at most half of them, so that
	// they cannot keep members of the Leader's uid from joining. Default 64 (D-Bus:
	// max_incomplete_connections).
	MaxHandshaking int
	// HandshakeTimeout is how long a connection has to complete the handshake. Default
	// 5 s; a handshake is always bounded.
	HandshakeTimeout time.Duration
	// MaxInflight bounds the requests one connection may have running; past it the
	// Leader stops reading that connection until one finishes. The request it read
	// last, which waits for the place, counts its caller's time from when the wait
	// began: a call or publish whose deadline passes meanwhile is answered as timed out
	// and does not reach the Service. (The requests behind it, not read yet, count their
	// time from when they are read.) Default 512.
	MaxInflight int
	// MaxQueued bounds the bytes queued for one peer and not yet written; a peer that
	// does not read is dropped past it (it reconnects). Default 64 MiB (NATS:
	// max_pending).
	MaxQueued int
	// MaxSubscriptions bounds the topics one connection subscribes to (a process's
	// subscriptions of a topic count once). Default 4096.
	MaxSubscriptions int
	// MaxRegistrations and MaxRegisteredBytes bound the registrations one connection
	// holds, in number and in payload bytes. Defaults 1024 and 16 MiB.
	MaxRegistrations   int
	MaxRegisteredBytes int
	// MaxNameLen bounds a method or topic name, in bytes, in every role (a member
	// refuses a longer name before sending it). Default 1024; at most 64 KiB.
	MaxNameLen int
	// MaxFDs bounds the file descriptors one connection's requests hold while they are
	// served (a Blob counts as one). Default 64 (D-Bus: max_incoming_unix_fds).
	MaxFDs int
	// FDHeadroom is how many descriptors the Leader keeps free: it refuses new
	// connections, and requests that pass descriptors, saying why, when fewer than this
	// would be left under its RLIMIT_NOFILE, so that accept never fails with EMFILE and
	// the Service can still open files. Peers of other uids may take at most three
	// quarters of what the Leader's own uid leaves above the headroom, so that they
	// cannot keep it from joining. Default 64.
	FDHeadroom int
	// MaxPartialBytes bounds the memory that incomplete frames hold across all
	// connections (frames over 64 KiB only: smaller ones are bounded by MaxConns).
	// Past it, connections that send large frames wait for others to complete.
	// Default 256 MiB.
	MaxPartialBytes int64
	// FrameTimeout is how long a frame may take to arrive once its header has: a peer
	// that stops in the middle of a frame is dropped after it, whatever
	// Config.HeartbeatTimeout says, and the descriptors it passed are closed. Default
	// 30 s.
	FrameTimeout time.Duration
}

// defaultLimits are the limits a zero Limits means.
var defaultLimits = Limits{
	MaxConns:           4096,
	MaxConnsPerUID:     256,
	MaxHandshaking:     64,
	HandshakeTimeout:   5 * time.Second,
	MaxInflight:        512,
	MaxQueued:          64 << 20,
	MaxSubscriptions:   4096,
	MaxRegistrations:   1024,
	MaxRegisteredBytes: 16 << 20,
	MaxNameLen:         1024,
	MaxFDs:             64,
	FDHeadroom:         64,
	MaxPartialBytes:    256 << 20,
	FrameTimeout:       30 * time.Second,
}

// DefaultLimits returns the limits that zero fields of Limits mean.
func DefaultLimits() Limits { return defaultLimits }

// withDefaults fills zero fields with their defaults and turns negative ones into "no
// limit" (the largest value).
func (l Limits) withDefaults() Limits {
	d := defaultLimits
	pickInt := func(v *int, def int) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = maxInt
		}
	}
	pickInt(&l.MaxConns, d.MaxConns)
	pickInt(&l.MaxConnsPerUID, d.MaxConnsPerUID)
	pickInt(&l.MaxHandshaking, d.MaxHandshaking)
	pickInt(&l.MaxInflight, d.MaxInflight)
	pickInt(&l.MaxQueued, d.MaxQueued)
	pickInt(&l.MaxSubscriptions, d.MaxSubscriptions)
	pickInt(&l.MaxRegistrations, d.MaxRegistrations)
	pickInt(&l.MaxRegisteredBytes, d.MaxRegisteredBytes)
	pickInt(&l.MaxFDs, d.MaxFDs)
	if l.FDHeadroom == 0 {
		l.FDHeadroom = d.FDHeadroom
	} else if l.FDHeadroom < 0 {
		l.FDHeadroom = 0
	}
	if l.MaxNameLen <= 0 {
		l.MaxNameLen = d.MaxNameLen // a name always has a bound: the frame's meta has one
	}
	switch {
	case l.MaxPartialBytes == 0:
		l.MaxPartialBytes = d.MaxPartialBytes
	case l.MaxPartialBytes < 0:
		l.MaxPartialBytes = 0 // ipc: no budget
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = d.HandshakeTimeout // a handshake is always bounded
	}
	switch {
	case l.FrameTimeout == 0:
		l.FrameTimeout = d.FrameTimeout
	case l.FrameTimeout < 0:
		l.FrameTimeout = 0 // ipc: none
	}
	return l
}

const maxInt = int(^uint(0) >> 1)

// validate checks the fields a Config cannot do without.
func (l Limits) validate() error {
	if l.MaxNameLen > frame.DefaultMaxMeta {
		return fmt.Errorf("MaxNameLen: %d is over the protocol's %d", l.MaxNameLen, frame.DefaultMaxMeta)
	}
	if l.MaxFDs > 0 && l.MaxFDs < frame.MaxFDs {
		return fmt.Errorf("MaxFDs: %d is under the %d descriptors one message may pass", l.MaxFDs, frame.MaxFDs)
	}
	return nil
}

// limitError is a refusal by a limit, as the Leader sends it.
type limitError struct {
	limit string // the Limits field
	msg   string
}

func (e *limitError) Error() string        { return e.msg }
func (e *limitError) Is(target error) bool { return target == ErrLimit }

// overLimit makes the refusal of limit, whose value is n, with what was asked.
func overLimit(limit string, n int, format string, args ...any) *limitError {
	return &limitError{limit: limit, msg: fmt.Sprintf("%s, over the leader's limit of %d (Config.Limits.%s)", fmt.Sprintf(format, args...), n, limit)}
}

// refusals logs and counts what the limits and the peer policy refuse: the first
// refusal of each kind at once, the rest as one line per summaryInterval, so that a
// flood of bad peers cannot flood the log.
type refusals struct {
	log *slog.Logger
	mu  sync.Mutex
	by  map[string]*refusalCount
}

// summaryInterval is how often repeated refusals of one kind are summarised.
const summaryInterval = 10 * time.Second

type refusalCount struct {
	total      uint64
	loggedAt   time.Time // when the last line about this kind was written
	suppressed int       // refusals since, not logged
	last       string    // the last suppressed one, for the summary
}

// note records one refusal of kind: peer is who, why says what.
func (r *refusals) note(level slog.Level, kind string, peer ipc.PeerCred, why error) {
	now := time.Now()
	r.mu.Lock()
	if r.by == nil {
		r.by = make(map[string]*refusalCount)
	}
	rc := r.by[kind]
	if rc == nil {
		rc = &refusalCount{}
		r.by[kind] = rc
	}
	rc.total++
	quiet := now.Sub(rc.loggedAt) < summaryInterval
	if quiet {
		rc.suppressed++
		rc.last = fmt.Sprintf("%v: %v", peer, why)
	} else {
		rc.loggedAt = now
	}
	r.mu.Unlock()
	if !quiet {
		r.log.Log(context.Background(), level, "cluster: refused a peer (further refusals of this kind are summarised every 10s)", "limit", kind, "peer", peer, "reason", why)
	}
}

// flush writes the summaries that are due.
func (r *refusals) flush() {
	type line struct {
		kind, last string
		n          int
	}
	var lines []line
	now := time.Now()
	r.mu.Lock()
	for kind, rc := range r.by {
		if rc.suppressed > 0 && now.Sub(rc.loggedAt) >= summaryInterval {
			lines = append(lines, line{kind, rc.last, rc.suppressed})
			rc.suppressed, rc.last, rc.loggedAt = 0, "", now
		}
	}
	r.mu.Unlock()
	sort.Slice(lines, func(i, j int) bool { return lines[i].kind < lines[j].kind })
	for _, l := range lines {
		r.log.Warn("cluster: refused more peers", "limit", l.kind, "count", l.n, "interval", summaryInterval, "last", l.last)
	}
}

// counts returns the refusals so far, by kind.
func (r *refusals) counts() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.by) == 0 {
		return nil
	}
	out := make(map[string]uint64, len(r.by))
	for k, rc := range r.by {
		out[k] = rc.total
	}
	return out
}

// refuseConn answers a connection the Leader will not serve with an error frame (id
// 0) saying why, then closes it. It does not block: the socket is fresh, so the frame
// fits its buffer; a peer that is gone makes the write fail, which is fine.
func refuseConn(nc net.Conn, code string, why error) {
	_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	_ = frame.Write(nc, frame.Header{Kind: frame.KindError}, []byte(code), []byte(why.Error()))
	_ = nc.Close()
}

// isFDExhaustion reports whether err says this process or the system ran out of
// descriptors.
func isFDExhaustion(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// admission counts a Leader's connections, in all, in handshake and by uid, against its
// Limits, and estimates its descriptors against RLIMIT_NOFILE. All under mu except the
// descriptor estimate, which the request path reads and changes atomically.
type admission struct {
	lim  *Limits
	self uint32 // the Leader's uid: its own connections count only in MaxConns

	mu          sync.Mutex
	conns       int
	handshaking int
	byUID       map[uint32]int // connections of each uid other than self
	// connections of uids other than self, in all and in handshake
	foreignConns, foreignHandshaking int

	fds fdGauge
}

// admit takes a place for a new connection from peer, or returns the limitError that
// refuses it.
func (a *admission) admit(peer ipc.PeerCred) error {
	foreign := peer.Known && peer.UID != a.self
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.conns >= a.lim.MaxConns:
		return overLimit("MaxConns", a.lim.MaxConns, "the leader holds %d connections", a.conns)
	case a.handshaking >= a.lim.MaxHandshaking:
		return overLimit("MaxHandshaking", a.lim.MaxHandshaking, "%d connections are in their handshake", a.handshaking)
	case foreign && a.byUID[peer.UID] >= a.lim.MaxConnsPerUID:
		return overLimit("MaxConnsPerUID", a.lim.MaxConnsPerUID, "uid %d holds %d connections", peer.UID, a.byUID[peer.UID])
	case foreign && a.foreignConns >= max(1, a.lim.MaxConns/4*3):
		return overLimit("MaxConns", a.lim.MaxConns, "uids other than the leader's hold %d connections, three quarters of the limit", a.foreignConns)
	case foreign && a.foreignHandshaking >= max(1, a.lim.MaxHandshaking/2):
		return overLimit("MaxHandshaking", a.lim.MaxHandshaking, "uids other than the leader's have %d connections in their handshake, half the limit", a.foreignHandshaking)
	}
	if err := a.fds.room(connFDs(foreign), a.lim.FDHeadroom, foreign); err != nil {
		return err
	}
	a.conns++
	a.handshaking++
	if foreign {
		if a.byUID == nil {
			a.byUID = make(map[uint32]int)
		}
		a.byUID[peer.UID]++
		a.foreignConns++
		a.foreignHandshaking++
	}
	a.fds.add(1, foreign)
	if foreign {
		a.fds.reserve(frame.MaxFDs)
	}
	return nil
}

// connFDs is what a new connection needs in the descriptor gauge: itself, and for a
// peer of another uid the reserve for a frame it may leave half sent (which only the
// next count sees), so that such peers cannot pass their share between two counts.
func connFDs(foreign bool) int {
	if foreign {
		return 1 + frame.MaxFDs
	}
	return 1
}

// handshook moves an admitted connection out of the handshake.
func (a *admission) handshook(peer ipc.PeerCred) {
	a.mu.Lock()
	a.handshaking--
	if peer.Known && peer.UID != a.self {
		a.foreignHandshaking--
	}
	a.mu.Unlock()
}

// dec decrements m[k], deleting it at zero.
func dec(m map[uint32]int, k uint32) {
	if m[k]--; m[k] <= 0 {
		delete(m, k)
	}
}

// leave gives back an admitted connection's place; inHandshake says it never got
// through the handshake.
func (a *admission) leave(peer ipc.PeerCred, inHandshake bool) {
	foreign := peer.Known && peer.UID != a.self
	a.mu.Lock()
	a.conns--
	if inHandshake {
		a.handshaking--
		if foreign {
			a.foreignHandshaking--
		}
	}
	if foreign {
		dec(a.byUID, peer.UID)
		a.foreignConns--
	}
	a.mu.Unlock()
	a.fds.add(-1, foreign)
	if foreign {
		a.fds.reserve(-frame.MaxFDs)
	}
}

// fdGauge estimates the descriptors this process has open: what was counted at the last
// calibration (measured), plus what the Leader opened or took from peers since (delta:
// connections, descriptors passed with requests being served), plus a reserve for
// what a peer of another uid may hold without the Leader's knowing yet (reserved: the
// descriptors of a frame it may leave half sent, which only the next count sees).
// Peers of other uids may hold at most three quarters of what the Leader's own uid
// leaves above the headroom. Where neither the count nor the limit can be read, it
// never refuses.
type fdGauge struct {
	limit    atomic.Int64 // RLIMIT_NOFILE's soft limit; 0 when unknown
	measured atomic.Int64 // open at the last count
	delta    atomic.Int64 // opened (or, negative, closed) since
	reserved atomic.Int64 // held in reserve for peers of other uids
	foreign  atomic.Int64 // held for peers of other uids, their reserve included
	counted  atomic.Int64 // unix nanos of the last count
	open     func() int64 // counts the open descriptors: openFDs, or a test's
}

func (g *fdGauge) openNow() int64 {
	if g.open != nil {
		return g.open()
	}
	return openFDs()
}

// calibrate reads the limit and counts the open descriptors.
func (g *fdGauge) calibrate() {
	limit := fdLimit()
	if limit <= 0 || !g.count() {
		g.limit.Store(0)
		return
	}
	g.limit.Store(limit)
}

// count replaces the estimate of what is open by a count, if one can be had.
func (g *fdGauge) count() bool {
	open := g.openNow()
	if open < 0 {
		return false
	}
	g.counted.Store(time.Now().UnixNano())
	g.measured.Store(open)
	g.delta.Store(0)
	return true
}

// used is the estimate: what is open, and the reserve.
func (g *fdGauge) used() int64 { return g.measured.Load() + g.delta.Load() + g.reserved.Load() }

// recount counts again, at most once per 10 ms, and returns the estimate.
func (g *fdGauge) recount() int64 {
	now := time.Now().UnixNano()
	if last := g.counted.Load(); now-last > int64(10*time.Millisecond) && g.counted.CompareAndSwap(last, now) {
		g.count()
	}
	return g.used()
}

// add counts n more open descriptors (n < 0: fewer), held for a peer of another uid
// if foreign.
func (g *fdGauge) add(n int, foreign bool) {
	g.delta.Add(int64(n))
	if foreign {
		g.foreign.Add(int64(n))
	}
}

// reserve holds n descriptors (n < 0: gives them back) for a peer of another uid.
func (g *fdGauge) reserve(n int) {
	g.reserved.Add(int64(n))
	g.foreign.Add(int64(n))
}

// room returns nil if n more descriptors, for a peer of another uid if foreign, leave at
// least headroom free, and leave the Leader's own uid a quarter of the rest; else the
// limitError that refuses them.
func (g *fdGauge) room(n, headroom int, foreign bool) error {
	limit := g.limit.Load()
	if limit == 0 {
		return nil
	}
	used := g.used()
	if used+int64(n) > limit-4*int64(headroom) {
		used = g.recount() // near the limit: count instead of estimating
	}
	free := limit - int64(headroom)
	if used+int64(n) > free {
		return overLimit("FDHeadroom", headroom, "the leader has about %d of its %d descriptors (RLIMIT_NOFILE) in use, which would leave fewer than FDHeadroom free", used, limit)
	}
	if !foreign {
		return nil
	}
	theirs := g.foreign.Load()
	own := used - theirs
	if share := (free - own) * 3 / 4; theirs+int64(n) > share {
		return overLimit("FDHeadroom", headroom, "peers of other uids hold %d descriptors, the most they may: three quarters of the %d that the leader's own uid leaves above FDHeadroom", theirs, free-own)
	}
	return nil
}

package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Registration is a publish the cluster remembers: typically a worker's address in a
// service registry. The Leader publishes it through Service.Publish; every later Leader
// gets it again from the registering member (in the order the member registered, once
// per Leader); Withdraw takes it back for good. When the registering member's process
// ends, by Close or by a crash, the Leader withdraws its registrations from the Service
// (see Withdrawer), because nobody is left to keep them alive.
//
// This is what cluster-client users get from publish, minus its flaw: cluster-client
// replays every publish after a re-election, including withdrawn ones.
type Registration struct {
	c     *Client
	id    uint64
	topic string
	msg   Message

	// guarded by Client.regs.op
	activeOn  backend // the backend that holds it; nil when none does
	withdrawn bool

	once sync.Once
	err  error
}

// Topic returns the registration's topic.
func (r *Registration) Topic() string { return r.topic }

// Data returns the registered payload (do not modify it).
func (r *Registration) Data() []byte { return r.msg.Data }

// registrations is the member's set of live registrations, ordered by id (ids grow in
// the order Register was called).
type registrations struct {
	// op serialises every registration operation on a backend (register, withdraw,
	// replay), so that a new Leader receives registrations in their order and each
	// exactly once.
	op sync.Mutex
	// heldBy holds every live registration with an id up to heldUpTo (a watermark,
	// guarded by op): ensure walks only the registrations above it, so that Register
	// costs the same however many a member holds.
	heldBy   backend
	heldUpTo uint64

	mu     sync.Mutex // guards live and nextID
	live   map[uint64]*Registration
	nextID uint64
}

// Register publishes msg on topic and keeps it registered until Withdraw or until this
// member leaves: after a failover the member registers it again with the new Leader.
// It returns once the Leader's Service accepted it, or with the Service's error (a
// *RemoteError; nothing is then remembered). If the Leader is lost before it answers,
// Register waits for the next one and registers there. ctx (or Config.CallTimeout)
// bounds the wait.
func (c *Client) Register(ctx context.Context, topic string, msg Message) (*Registration, error) {
	if msg.Blob != nil || len(msg.Files) > 0 {
		return nil, fmt.Errorf("cluster: register %q: a registration carries Data only, not a Blob or Files (it is replayed to every future Leader): %w", topic, errors.ErrUnsupported)
	}
	if err := c.checkMessage("register", topic, msg); err != nil {
		return nil, err
	}
	select {
	case <-c.closing:
		return nil, fmt.Errorf("register %q: %w", topic, ErrClosed)
	default:
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	c.regs.mu.Lock()
	c.regs.nextID++
	r := &Registration{c: c, id: c.regs.nextID, topic: topic, msg: msg}
	if c.regs.live == nil {
		c.regs.live = make(map[uint64]*Registration)
	}
	c.regs.live[r.id] = r
	c.regs.mu.Unlock()
	err := c.do(ctx, opRegister, topic, time.Now(), func(b backend) error {
		err := c.regs.ensure(ctx, r, b)
		if errors.Is(err, ErrLeaderLost) {
			// It stays on the list, and the next Leader gets it in the replay; wait
			// for that one to acknowledge.
			return fmt.Errorf("%w: %w", errNotSent, err)
		}
		return err
	})
	if err != nil {
		c.regs.op.Lock()
		r.withdrawn = true
		c.regs.drop(r)
		b := r.activeOn
		r.activeOn = nil
		c.regs.op.Unlock()
		if b != nil { // a replay got it registered after all: take it back
			wctx, wcancel := c.callContext(context.Background())
			_ = b.withdraw(wctx, r)
			wcancel()
		}
		return nil, err
	}
	return r, nil
}

// Withdraw takes the registration back: the Leader withdraws it from its Service (see
// Withdrawer) and no later Leader hears of it. Withdraw is idempotent and returns the
// same result every time. If the Leader is lost meanwhile, there is nothing left to
// undo and Withdraw succeeds.
func (r *Registration) Withdraw(ctx context.Context) error {
	r.once.Do(func() {
		c := r.c
		ctx, cancel := c.callContext(ctx)
		defer cancel()
		c.regs.op.Lock()
		defer c.regs.op.Unlock()
		r.withdrawn = true
		c.regs.drop(r)
		b := r.activeOn
		r.activeOn = nil
		if b == nil || b != c.currentBackend() || b.context().Err() != nil {
			return // no Leader holds it any more
		}
		err := b.withdraw(ctx, r)
		if errors.Is(err, errNotSent) || errors.Is(err, ErrLeaderLost) || errors.Is(err, ErrClosed) {
			err = nil // the Leader that held it is gone, and the next never hears of it
		}
		r.err = err
	})
	return r.err
}

// ensure registers r on b unless b already holds it or it was withdrawn. Older live
// registrations that b does not hold yet go first, so b always receives them in order
// whoever (this call or the replay after a failover) gets there first.
func (rs *registrations) ensure(ctx context.Context, r *Registration, b backend) error {
	rs.op.Lock()
	defer rs.op.Unlock()
	from := uint64(1)
	if rs.heldBy == b {
		from = rs.heldUpTo + 1
	}
	upTo, gap := from-1, false // the watermark this walk can set
	for _, x := range rs.between(from, r.id) {
		if x.withdrawn || x.activeOn == b {
			if !gap {
				upTo = x.id
			}
			continue
		}
		if err := b.register(ctx, x); err != nil {
			if b.context().Err() != nil {
				return err
			}
			r.c.cfg.Logger.Warn("cluster: re-registering failed", "topic", x.topic, "err", err)
			gap = true
			continue
		}
		x.activeOn = b
		if !gap {
			upTo = x.id
		}
	}
	if !r.withdrawn && r.activeOn != b {
		if err := b.register(ctx, r); err != nil {
			return err
		}
		r.activeOn = b
	}
	if !gap {
		upTo = max(upTo, r.id)
	}
	rs.held(b, upTo)
	return nil
}

// held records that b holds every live registration up to id upTo.
func (rs *registrations) held(b backend, upTo uint64) {
	if rs.heldBy != b {
		rs.heldBy, rs.heldUpTo = b, 0
	}
	rs.heldUpTo = max(rs.heldUpTo, upTo)
}

// between returns the live registrations with ids in [from, to), in order. It looks ids
// up one by one when the range is narrower than the set (the usual case: empty), and
// sorts the set otherwise.
func (rs *registrations) between(from, to uint64) []*Registration {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if from >= to {
		return nil
	}
	var out []*Registration
	if to-from <= uint64(len(rs.live)) {
		for id := from; id < to; id++ {
			if x := rs.live[id]; x != nil {
				out = append(out, x)
			}
		}
		return out
	}
	for id, x := range rs.live {
		if id >= from && id < to {
			out = append(out, x)
		}
	}
	slices.SortFunc(out, func(a, b *Registration) int { return cmp.Compare(a.id, b.id) })
	return out
}

// drop removes r from the live set. rs.op must be held.
func (rs *registrations) drop(r *Registration) {
	rs.mu.Lock()
	delete(rs.live, r.id)
	rs.mu.Unlock()
}

// snapshot returns the live registrations, in order.
func (rs *registrations) snapshot() []*Registration {
	return rs.between(1, math.MaxUint64)
}

func (rs *registrations) count() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.live)
}

// replay registers every live registration on b, in order, until b ends or the Client
// closes. It holds op throughout, so a Register racing with it lands after the older
// registrations.
func (c *Client) replay(b backend) {
	c.regs.op.Lock()
	defer c.regs.op.Unlock()
	upTo, gap := uint64(0), false
	defer func() { c.regs.held(b, upTo) }()
	renew(c, b, c.regs.snapshot(), func(ctx context.Context, r *Registration) {
		if !r.withdrawn && r.activeOn != b {
			if err := b.register(ctx, r); err != nil {
				gap = true
				c.cfg.Logger.Warn("cluster: re-registering failed", "topic", r.topic, "err", err)
				return
			}
			r.activeOn = b
		}
		if !gap {
			upTo = r.id
		}
	})
}

package cluster

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/cluster-client-go/cluster/frame"
)

// registration is one the Leader holds for a Follower.
type registration struct {
	seq   uint64
	topic string
	msg   Message
}

// register publishes a Follower's registration and remembers it for the life of the
// connection.
func (pc *peerConn) register(ctx context.Context, topic string, body []byte) error {
	id, payload, err := frame.ParseRegister(body)
	if err != nil {
		pc.conn.Fail(frame.CodeProtocol, err)
		return err
	}
	lim := &pc.l.c.cfg.lim
	ended, dup := true, false
	pc.l.call(func(*termState) {
		_, dup = pc.regs[id]
		ended = pc.regs == nil
		n, bytes := len(pc.regs)+pc.regsTaken, pc.regBytes+pc.regBytesTaken+len(payload)
		switch {
		case ended || dup:
		case n >= lim.MaxRegistrations:
			err = overLimit("MaxRegistrations", lim.MaxRegistrations, "this connection holds %d registrations", n)
		case bytes > lim.MaxRegisteredBytes:
			err = overLimit("MaxRegisteredBytes", lim.MaxRegisteredBytes, "this connection's registrations would hold %d bytes", bytes)
		default:
			pc.regsTaken++
			pc.regBytesTaken += len(payload)
		}
	})
	switch {
	case ended:
		return fmt.Errorf("the connection ended")
	case dup:
		return nil // a replay of what we hold: nothing to do
	case err != nil:
		return err
	}
	msg := Message{Data: slices.Clone(payload)}
	err = pc.l.svc.publish(ctx, topic, msg)
	kept := false
	pc.l.call(func(*termState) {
		pc.regsTaken--
		pc.regBytesTaken -= len(payload)
		if _, dup := pc.regs[id]; err != nil || dup || pc.regs == nil {
			return
		}
		pc.regSeq++
		pc.regs[id] = registration{seq: pc.regSeq, topic: topic, msg: msg}
		pc.regBytes += len(msg.Data)
		kept = true
	})
	if err != nil {
		return pc.l.c.serviceErr(ctx, "register", topic, err)
	}
	if !kept {
		// The connection ended while the Service registered it (its owner is gone), or
		// the same id came twice at once (a broken peer: the first holds it): this
		// publish is undone.
		pc.l.withdrawFromService(topic, msg)
	}
	return nil
}

// withdraw takes back a Follower's registration.
func (pc *peerConn) withdraw(ctx context.Context, topic string, body []byte) error {
	id, err := frame.ParseWithdraw(body)
	if err != nil {
		pc.conn.Fail(frame.CodeProtocol, err)
		return err
	}
	var r registration
	ok := false
	pc.l.call(func(*termState) {
		if r, ok = pc.regs[id]; ok {
			delete(pc.regs, id)
			pc.regBytes -= len(r.msg.Data)
		}
	})
	if !ok {
		return nil // not held: nothing to undo
	}
	if err := pc.l.svc.withdraw(ctx, r.topic, r.msg); err != nil {
		return pc.l.c.serviceErr(ctx, "withdraw", topic, err)
	}
	return nil
}

// endRegistrations withdraws, in registration order, what a Follower whose connection
// ended still had registered: its process left or died, and nobody will renew them. At
// the end of the term they are left to the Service's Close instead: the Followers
// register them again with the next Leader.
func (pc *peerConn) endRegistrations() {
	var regs map[uint64]registration
	stopping := false
	pc.l.call(func(st *termState) { regs, pc.regs, stopping = pc.regs, nil, st.stopping })
	if len(regs) == 0 || pc.l.ctx.Err() != nil || stopping {
		return
	}
	ordered := make([]registration, 0, len(regs))
	for _, r := range regs {
		ordered = append(ordered, r)
	}
	slices.SortFunc(ordered, func(a, b registration) int { return cmp.Compare(a.seq, b.seq) })
	for _, r := range ordered {
		pc.l.withdrawFromService(r.topic, r.msg)
	}
}

// withdrawFromService tells a Withdrawer Service that a registration's owner is gone.
func (l *leader) withdrawFromService(topic string, msg Message) {
	if !l.svc.withdrawer() || !l.calls.enter() {
		return
	}
	defer l.calls.leave()
	ctx, cancel := context.WithTimeout(l.ctx, l.c.callTimeoutOr(DefaultCallTimeout))
	defer cancel()
	if err := l.svc.withdraw(ctx, topic, msg); err != nil {
		l.c.cfg.Logger.Warn("cluster: withdrawing a departed member's registration failed", "topic", topic, "err", errText(err))
	}
}

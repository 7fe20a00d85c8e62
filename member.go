package cluster

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// run is the role state machine. It alone changes the role; callers only read the
// published epoch.
func (c *Client) run(joinCtx context.Context) {
	defer close(c.runDone)
	c.herald = newHerald(c.cfg)
	defer c.herald.close()
	joined, followed := false, false
	var lostAt time.Time
	var draining []*follower // Followers of old Leaders that said goodbye, still answering
	var closedAt time.Time   // when a Leader stopped leading: just before it released the lock
	defer func() {
		for _, f := range draining {
			f.conn.Close()
			c.accountBytes(f)
		}
		if closedAt.IsZero() {
			closedAt = time.Now()
		}
		c.setEpoch(nil, RoleInfo{Role: RoleClosed, At: closedAt})
	}()
	for {
		ctx := c.life
		if !joined {
			ctx = joinCtx
		}
		b, err := c.elect(ctx, joined, lostAt.Add(fastWindow))
		if err != nil {
			if !joined {
				c.joined <- err
			}
			return
		}
		f, isFollower := b.(*follower)
		if isFollower && followed {
			c.stats.reconnects.Add(1) // counted when Role shows the new Leader
		}
		c.setEpoch(b, b.info())
		if isFollower {
			followed = true
			// The connection's reader may be resting between calls: when the Leader dies
			// or hands over, it reads at once, so the next election starts now. Where
			// either cannot be watched (off Linux, another pid namespace, no inotify
			// instance left), it rests briefly, so that it notices on its own.
			c.herald.follow(c.cfg.lockPath, int(f.welcome.PID), f.conn.ReadNow)
			if !c.herald.quiet() {
				f.conn.RestBriefly()
			}
		} else {
			c.herald.lead()
		}
		c.resubscribe(b)
		c.replay(b)
		if !lostAt.IsZero() {
			d := time.Since(lostAt)
			c.stats.lastFailover.Store(int64(d))
			c.cfg.Logger.Info("cluster: failover complete", "name", c.cfg.Name, "took", d, "role", b.info().Role.String(), "term", b.info().Term)
		}
		if !joined {
			joined = true
			c.joined <- nil
		}
		switch b := b.(type) {
		case *leader:
			select {
			case <-c.closing:
				closedAt, c.closeErr = b.shutdown()
				return
			case <-b.demoted:
			}
			// The claim was lost under us (the lock file deleted or replaced): hand over
			// as on Close, then elect again like everyone else.
			lostAt, _ = b.shutdown() // shutdown logged Service.Close's error
			c.stats.failovers.Add(1)
			c.setEpoch(nil, RoleInfo{Role: RoleElecting, At: lostAt})
		case *follower:
			select {
			case <-c.closing:
				b.conn.Close()
				c.accountBytes(b)
				return
			case <-b.conn.Done():
				b.conn.Close()
				c.accountBytes(b)
			case <-b.goodbye:
				c.herald.leftGracefully()
				draining = append(draining, b)
				c.accountBytes(b) // what it carries while it drains is not counted
			}
			lostAt = time.Now()
			c.stats.failovers.Add(1)
			c.setEpoch(nil, RoleInfo{Role: RoleElecting, At: lostAt})
			c.cfg.Logger.Info("cluster: leader lost", "name", c.cfg.Name, "term", b.welcome.Term, "cause", b.cause())
			draining = slices.DeleteFunc(draining, func(f *follower) bool {
				if f.conn.Err() != nil {
					f.conn.Close()
					c.accountBytes(f)
					return true
				}
				return false
			})
		}
	}
}

// resubscribe establishes every live local subscription on b, until b's connection
// ends (the next backend will do it) or the Client closes.
func (c *Client) resubscribe(b backend) {
	renew(c, b, c.subs.snapshot(), func(ctx context.Context, lt *localTopic) {
		if err := c.subs.ensure(ctx, lt, b); err != nil {
			c.cfg.Logger.Warn("cluster: re-subscribing failed", "topic", lt.key.topic, "shared", lt.key.shared, "err", err)
		}
	})
}

// renew does, in order, what a new backend b must be told of items (one call of op
// each, bounded by the call timeout), until b ends (the next backend is told instead)
// or the Client closes.
func renew[T any](c *Client, b backend, items []T, op func(context.Context, T)) {
	for _, x := range items {
		ctx, cancel := context.WithTimeout(b.context(), c.callTimeoutOr(DefaultCallTimeout))
		stop := context.AfterFunc(c.life, cancel)
		op(ctx, x)
		stop()
		cancel()
		if b.context().Err() != nil || c.life.Err() != nil {
			return
		}
	}
}

// accountBytes adds a closed Follower connection's bytes to the counters, once.
func (c *Client) accountBytes(f *follower) {
	c.stats.bytesMu.Lock()
	defer c.stats.bytesMu.Unlock()
	if !f.accounted {
		f.accounted = true
		c.stats.endedBytes(f.conn.Bytes())
	}
}

// fallBack switches an automatically chosen Unix transport to TCP when err shows that
// flock on Dir or Unix sockets are unavailable here. It reports whether it switched.
func (c *Client) fallBack(err error) bool {
	if c.cfg.transport != TransportUnix || c.trk.Load().why != "default" || !unsupportedHere(err) {
		return false
	}
	c.setTransport(TransportTCP, fmt.Sprintf("the Unix transport is unavailable here: %v", err))
	return true
}

package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/cluster-client-go/cluster/lock"
)

// Election backoff: the first retries are immediate and sub-millisecond, because after a
// Leader's death the kernel frees its lock within ~1-2 ms; later ones back off so a
// member waiting for a long-absent Leader costs nothing.
const (
	minBackoff = 50 * time.Microsecond
	maxBackoff = 50 * time.Millisecond
	// A member whose NewService failed after it had joined stays away from the lock
	// for serviceBackoff, doubling with each failure in a row up to maxServiceBackoff
	// (with ±25% jitter), so that another member gets a chance to lead and a Service
	// that cannot be built costs a few attempts a minute, not a term every 250 ms.
	serviceBackoff    = 250 * time.Millisecond
	maxServiceBackoff = 8 * time.Second
	// For fastWindow after losing its Leader, a member retries at least every
	// fastBackoff: the next Leader listens about a millisecond after the last one died,
	// and an exponential backoff would overshoot it by as much again.
	fastBackoff = 150 * time.Microsecond
	fastWindow  = 10 * time.Millisecond
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
		c.setEpoch(b, b.info())
		if _, ok := b.(*follower); ok {
			if followed {
				c.stats.reconnects.Add(1)
			}
			followed = true
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
		if f, ok := b.(*follower); ok {
			c.herald.follow(c.cfg.lockPath, int(f.welcome.PID))
		} else {
			c.herald.lead()
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

// elect tries, until it succeeds or ctx or Close ends it, to lead or to follow.
// Until fastUntil it retries at least every fastBackoff.
func (c *Client) elect(ctx context.Context, joined bool, fastUntil time.Time) (backend, error) {
	backoff := time.Duration(0)
	var lastLead, lastFollow error
	var avoidLockUntil time.Time
	refusals, hungUp, serviceFailures := 0, 0, 0
	var avoidFollowUntil time.Time // a Leader of another identity leads: ask it again then
	c.herald.drain()               // the first attempts look at everything anyway
	for attempt := 0; ; attempt++ {
		select {
		case <-c.closing:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, c.diagnose(ctx.Err(), lastLead, lastFollow)
		default:
		}
		if c.cfg.Lead != LeadNever && time.Now().After(avoidLockUntil) {
			won, term, err := c.tr.claim()
			switch {
			case err != nil && c.fallBack(err):
				continue
			case err != nil:
				lastLead = err
				if errors.Is(err, lock.ErrReplaced) {
					break
				}
				if !joined {
					return nil, lastLead
				}
				c.cfg.Logger.Warn("cluster: election failed; retrying", "name", c.cfg.Name, "err", err)
				backoff = maxBackoff
			case won:
				l, err := c.startLeader(ctx, term)
				if err == nil {
					return l, nil
				}
				if c.fallBack(err) {
					continue
				}
				lastLead = err
				if !errors.Is(err, ErrServiceUnavailable) {
					c.cfg.Logger.Warn("cluster: could not lead; released the claim", "name", c.cfg.Name, "err", err)
					avoidLockUntil = time.Now().Add(serviceBackoff)
					break
				}
				if !joined {
					return nil, err // Join reports NewService's error at once
				}
				serviceFailures++
				d := serviceRetry(serviceFailures)
				avoidLockUntil = time.Now().Add(d)
				c.setCause(err)
				c.cfg.Logger.Error("cluster: could not build the Service; calls fail until a leader serves", "name", c.cfg.Name, "err", errText(err), "retry_in", d.Round(time.Millisecond))
			default:
				lastLead = nil
			}
		}
		if err := c.dirReady(); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			lastFollow = err // not yet: wait for a Leader to create it, as for its socket
		} else if c.cfg.Lead != LeadAlways && !time.Now().Before(avoidFollowUntil) {
			f, err := c.follow(ctx)
			if err == nil {
				return f, nil
			}
			if c.fallBack(err) {
				continue
			}
			// A dying Leader hangs up on at most one handshake; a TCP port that keeps
			// doing it is held by a program that is not ours (see retryPolicy).
			if errors.Is(err, errHungUp) {
				hungUp++
				if !joined && c.tr.retry().hangUpsBeforeFail > 0 && hungUp >= c.tr.retry().hangUpsBeforeFail {
					return nil, fmt.Errorf("%w: %s accepts connections but hangs up without speaking the cluster protocol: is another program using the port? (set Config.Port): %w", ErrProtocol, c.tr.where(), err)
				}
			} else {
				hungUp = 0
			}
			lastFollow = err
			switch {
			case errors.Is(err, ErrIdentityMismatch):
				// Another program, or an incompatible version, leads: it never serves
				// this member. Fail Join; after it, tell callers at once and ask again
				// rarely (it may hand over to a member like this one).
				if !joined {
					return nil, err
				}
				refusals++
				c.setCause(err)
				if refusals == 1 {
					c.cfg.Logger.Error("cluster: the leader serves another service identity; calls fail until one that matches leads", "name", c.cfg.Name, "err", err)
				}
				avoidFollowUntil = time.Now().Add(serviceRetry(refusals))
			case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrProtocol):
				c.clearCause(ErrIdentityMismatch) // another Leader now
				// A Leader that refuses us will refuse again: fail Join after the
				// transport's retry policy allows (see retryPolicy). After Join, keep
				// trying (the next Leader may be configured differently) at a slow pace.
				refusals++
				if !joined && (refusals >= c.tr.retry().refusalsBeforeFail || errors.Is(err, ErrProtocol)) {
					return nil, err
				}
				backoff = max(backoff, minBackoff)
				if joined {
					backoff = maxBackoff
				}
			default:
				refusals = 0
				c.clearCause(ErrIdentityMismatch) // the Leader that refused us is gone
			}
		}
		// The first couple of attempts are immediate (one when news will come); then
		// back off with jitter.
		quiet := c.herald.quiet()
		if attempt >= 2 || (quiet && attempt >= 1) {
			if backoff == 0 {
				backoff = minBackoff
			} else if backoff < maxBackoff {
				backoff *= 2
			}
			d := backoff/2 + rand.N(backoff/2+1)
			switch {
			case quiet:
				// The lost Leader's exit and the next one's socket wake this member.
				d = max(d, quietBackoff)
			case d > fastBackoff && time.Now().Before(fastUntil):
				d = fastBackoff
			}
			if d < time.Millisecond {
				shortSleep(d) // the closing and ctx checks above come round again at once
				continue
			}
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-c.herald.wake:
				t.Stop()
			case <-c.closing:
				t.Stop()
				return nil, ErrClosed
			case <-ctx.Done():
				t.Stop()
				return nil, c.diagnose(ctx.Err(), lastLead, lastFollow)
			}
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

// dirReady checks, for a LeadNever member that found no Dir at Join, whether it exists
// now and passes the checks a Dir passes at Join (config.checkDir). An error matching
// fs.ErrNotExist means not yet; any other is final (ErrConfig).
func (c *Client) dirReady() error {
	if c.dirChecked {
		return nil
	}
	if err := c.cfg.checkDir(c.cfg.env.fsKind); err != nil {
		return err
	}
	c.dirChecked = true
	return nil
}

// serviceRetry is how long a member stays away from the lock after its n-th NewService
// failure in a row.
func serviceRetry(n int) time.Duration {
	d := maxServiceBackoff
	if n < 8 {
		d = min(serviceBackoff<<(n-1), maxServiceBackoff)
	}
	return d*3/4 + rand.N(d/2+1)
}

// diagnose builds Join's error when no role could be taken in time.
func (c *Client) diagnose(cause, lastLead, lastFollow error) error {
	msg := fmt.Sprintf("cluster %q in %s over %s: ", c.cfg.Name, c.cfg.Dir, c.tr.where())
	if h := c.tr.holder(); h != "" {
		msg += h + "; "
	}
	switch c.cfg.Lead {
	case LeadAlways:
		msg += "this member is the designated leader (LeadAlways) and the lock stayed held by another process"
	case LeadNever:
		msg += "this member never leads (LeadNever) and no leader answered"
	default:
		msg += "could neither take the lock nor reach its holder"
	}
	if lastLead != nil {
		msg += fmt.Sprintf("; leading failed: %v", lastLead)
	}
	if lastFollow != nil {
		msg += fmt.Sprintf("; following failed: %v", lastFollow)
	}
	return fmt.Errorf("%w: %s (%w)", ErrNoLeader, msg, cause)
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

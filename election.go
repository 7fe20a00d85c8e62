package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
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

// elect tries, until it succeeds or ctx or Close ends it, to lead or to follow.
// Until fastUntil it retries at least every fastBackoff.
//
// Each attempt tries to lead (unless LeadNever, or a recent failure to build the
// Service keeps this member away from the lock), then to follow (unless LeadAlways, or
// a Leader of another identity was met recently), then waits: see election.
func (c *Client) elect(ctx context.Context, joined bool, fastUntil time.Time) (backend, error) {
	e := &election{c: c, ctx: ctx, joined: joined, fastUntil: fastUntil}
	c.herald.drain() // the first attempts look at everything anyway
	for attempt := 0; ; attempt++ {
		if err := e.ended(); err != nil {
			return nil, err
		}
		if c.cfg.Lead != LeadNever && time.Now().After(e.avoidLockUntil) {
			b, again, err := e.lead()
			if b != nil || err != nil {
				return b, err
			}
			if again {
				continue
			}
		}
		b, again, err := e.follow()
		if b != nil || err != nil {
			return b, err
		}
		if again {
			continue
		}
		if err := e.pause(attempt); err != nil {
			return nil, err
		}
	}
}

// election is what one elect remembers between its attempts: the last reason each way
// failed (for Join's error), when it may try each way again, and how often it was
// refused, hung up on, or failed to build the Service in a row.
//
// Its steps return a backend when this member has a role, a final error when elect
// must give up (before Join returns, a refusal that will not change), or again when
// the transport changed under it (c.fallBack) and the attempt starts over at once.
type election struct {
	c         *Client
	ctx       context.Context
	joined    bool      // Join has returned: keep trying whatever the Leader says
	fastUntil time.Time // retry at least every fastBackoff until then

	backoff              time.Duration
	lastLead, lastFollow error
	avoidLockUntil       time.Time // NewService failed: let another member lead until then
	avoidFollowUntil     time.Time // a Leader of another identity leads: ask it again then

	refusals, hungUp, serviceFailures int // in a row
}

// ended returns ErrClosed once Close began, or Join's error once ctx ended.
func (e *election) ended() error {
	select {
	case <-e.c.closing:
		return ErrClosed
	case <-e.ctx.Done():
		return e.c.diagnose(e.ctx.Err(), e.lastLead, e.lastFollow)
	default:
		return nil
	}
}

// lead tries to take the lock and, if it did, to start leading.
func (e *election) lead() (b backend, again bool, err error) {
	c := e.c
	won, term, err := c.tr.claim()
	switch {
	case err != nil && c.fallBack(err):
		return nil, true, nil
	case errors.Is(err, lock.ErrReplaced):
		e.lastLead = err
		return nil, false, nil
	case err != nil:
		e.lastLead = err
		if !e.joined {
			return nil, false, err
		}
		c.cfg.Logger.Warn("cluster: election failed; retrying", "name", c.cfg.Name, "err", err)
		e.backoff = maxBackoff
		return nil, false, nil
	case !won:
		e.lastLead = nil
		return nil, false, nil
	}
	l, err := c.startLeader(e.ctx, term)
	switch {
	case err == nil:
		return l, false, nil
	case c.fallBack(err):
		return nil, true, nil
	}
	e.lastLead = err
	if !errors.Is(err, ErrServiceUnavailable) {
		c.cfg.Logger.Warn("cluster: could not lead; released the claim", "name", c.cfg.Name, "err", err)
		e.avoidLockUntil = time.Now().Add(serviceBackoff)
		return nil, false, nil
	}
	if !e.joined {
		return nil, false, err // Join reports NewService's error at once
	}
	e.serviceFailures++
	d := serviceRetry(e.serviceFailures)
	e.avoidLockUntil = time.Now().Add(d)
	c.setCause(err)
	c.cfg.Logger.Error("cluster: could not build the Service; calls fail until a leader serves", "name", c.cfg.Name, "err", errText(err), "retry_in", d.Round(time.Millisecond))
	return nil, false, nil
}

// follow tries to reach the Leader and be welcomed.
func (e *election) follow() (b backend, again bool, err error) {
	c := e.c
	if err := c.dirReady(); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, false, err
		}
		e.lastFollow = err // not yet: wait for a Leader to create it, as for its socket
		return nil, false, nil
	}
	if c.cfg.Lead == LeadAlways || time.Now().Before(e.avoidFollowUntil) {
		return nil, false, nil
	}
	f, err := c.follow(e.ctx)
	switch {
	case err == nil:
		return f, false, nil
	case c.fallBack(err):
		return nil, true, nil
	}
	if err := e.hungUpOn(err); err != nil {
		return nil, false, err
	}
	e.lastFollow = err
	return nil, false, e.refused(err)
}

// hungUpOn counts the handshakes a Leader hung up on in a row. A dying Leader hangs up
// on at most one; a TCP port that keeps doing it is held by a program that is not
// ours: Join fails after the transport's retry policy allows (see retryPolicy).
func (e *election) hungUpOn(err error) error {
	if !errors.Is(err, errHungUp) {
		e.hungUp = 0
		return nil
	}
	e.hungUp++
	limit := e.c.tr.retry().hangUpsBeforeFail
	if e.joined || limit == 0 || e.hungUp < limit {
		return nil
	}
	return fmt.Errorf("%w: %s accepts connections but hangs up without speaking the cluster protocol: is another program using the port? (set Config.Port): %w", ErrProtocol, e.c.tr.where(), err)
}

// refused decides what a Leader's refusal (err, from follow) means: a final error
// before Join returns, or how long to wait before asking again.
func (e *election) refused(err error) error {
	c := e.c
	switch {
	case errors.Is(err, ErrIdentityMismatch):
		// Another program, or an incompatible version, leads: it never serves this
		// member. Fail Join; after it, tell callers at once and ask again rarely (it
		// may hand over to a member like this one).
		if !e.joined {
			return err
		}
		e.refusals++
		c.setCause(err)
		if e.refusals == 1 {
			c.cfg.Logger.Error("cluster: the leader serves another service identity; calls fail until one that matches leads", "name", c.cfg.Name, "err", err)
		}
		e.avoidFollowUntil = time.Now().Add(serviceRetry(e.refusals))
	case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrProtocol):
		c.clearCause(ErrIdentityMismatch) // another Leader now
		// A Leader that refuses us will refuse again: fail Join after the transport's
		// retry policy allows (see retryPolicy). After Join, keep trying (the next
		// Leader may be configured differently) at a slow pace.
		e.refusals++
		if !e.joined && (e.refusals >= c.tr.retry().refusalsBeforeFail || errors.Is(err, ErrProtocol)) {
			return err
		}
		e.backoff = max(e.backoff, minBackoff)
		if e.joined {
			e.backoff = maxBackoff
		}
	default:
		e.refusals = 0
		c.clearCause(ErrIdentityMismatch) // the Leader that refused us is gone
	}
	return nil
}

// pause waits before the next attempt. The first couple of attempts are immediate
// (one when news will come, see herald); then it backs off exponentially with jitter,
// at most fastBackoff until fastUntil, and at least quietBackoff while the herald
// will wake this member when the lost Leader exits or the next one listens.
func (e *election) pause(attempt int) error {
	c := e.c
	quiet := c.herald.quiet()
	if attempt < 1 || attempt < 2 && !quiet {
		return nil
	}
	if e.backoff == 0 {
		e.backoff = minBackoff
	} else if e.backoff < maxBackoff {
		e.backoff *= 2
	}
	d := e.backoff/2 + rand.N(e.backoff/2+1)
	switch {
	case quiet:
		d = max(d, quietBackoff)
	case d > fastBackoff && time.Now().Before(e.fastUntil):
		d = fastBackoff
	}
	if d < time.Millisecond {
		shortSleep(d) // elect checks Close and ctx again at once
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.herald.wake:
	case <-c.closing:
		return ErrClosed
	case <-e.ctx.Done():
		return e.c.diagnose(e.ctx.Err(), e.lastLead, e.lastFollow)
	}
	return nil
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

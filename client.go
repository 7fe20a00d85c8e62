package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Role is a member's current part in the cluster.
type Role uint8

const (
	// RoleElecting: between Leaders (joining, or after the Leader was lost).
	RoleElecting Role = iota
	// RoleLeader: this process holds the lock and runs the Service.
	RoleLeader
	// RoleFollower: this process's calls go to the Leader over the socket.
	RoleFollower
	// RoleClosed: Close was called.
	RoleClosed
)

func (r Role) String() string {
	switch r {
	case RoleElecting:
		return "electing"
	case RoleLeader:
		return "leader"
	case RoleFollower:
		return "follower"
	case RoleClosed:
		return "closed"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// MarshalText implements encoding.TextMarshaler: JSON and logs show "leader", not 1.
func (r Role) MarshalText() ([]byte, error) {
	if r > RoleClosed {
		return nil, fmt.Errorf("cluster: cannot marshal unknown %v", r)
	}
	return []byte(r.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; it accepts what MarshalText makes.
func (r *Role) UnmarshalText(b []byte) error {
	return unmarshalEnum(r, b, "Role", RoleElecting, RoleLeader, RoleFollower, RoleClosed)
}

// unmarshalEnum sets *v to the value among vals whose String is b.
func unmarshalEnum[T interface {
	~uint8
	String() string
}](v *T, b []byte, typ string, vals ...T) error {
	names := make([]string, len(vals))
	for i, x := range vals {
		if x.String() == string(b) {
			*v = x
			return nil
		}
		names[i] = x.String()
	}
	return fmt.Errorf("%w: %q is not a %s (want one of %s)", ErrConfig, b, typ, strings.Join(names, ", "))
}

// RoleInfo describes a role and the leadership term it belongs to.
type RoleInfo struct {
	Role Role
	// Term is the leadership term: a number that grows with every new Leader and is
	// never reused (it is kept in the lock file). 0 while electing.
	Term uint64
	// LeaderPID is the Leader's pid as the Leader reported it (advisory: pids collide
	// across pid namespaces).
	LeaderPID int
	// At is when the role began. A Leader's term ends no later than the At of the role
	// that follows it (RoleClosed after Close: taken before the lock is released), so
	// the leadership intervals of a cluster's members never overlap.
	At time.Time
}

// backend is what calls go to: the local Leader's Service or the connection to a
// remote Leader. Errors matching errNotSent mean the request never left this process
// and may be retried on the next backend.
type backend interface {
	invoke(ctx context.Context, method string, req Message, oneway bool) (Message, error)
	publish(ctx context.Context, topic string, msg Message) error
	subscribe(ctx context.Context, topic string, shared bool) error
	unsubscribe(ctx context.Context, topic string, shared bool) error
	register(ctx context.Context, r *Registration) error
	withdraw(ctx context.Context, r *Registration) error
	info() RoleInfo
	// status is the Leader's Status (see Client.LeaderStatus).
	status(ctx context.Context) (*Status, error)
	// bytes counts what the backend's live connections read and wrote.
	bytes() (in, out uint64)
	// context ends when the backend can no longer serve (connection lost, term over).
	context() context.Context
}

// errNotSent marks a failure that happened before the request left this process.
var errNotSent = errors.New("request not sent")

// epoch is one period with a fixed backend (nil while electing). It is replaced, never
// mutated; changed is closed when it is replaced.
type epoch struct {
	b       backend
	role    RoleInfo
	changed chan struct{}
	// cause, while electing, is why calls fail at once instead of waiting for the next
	// Leader: this member won the election and could not build its Service.
	cause error
}

// Client is a member of a cluster. Use it from any number of goroutines. Whatever its
// role, calls behave the same: on the Leader they go straight to the Service, on a
// Follower over the socket to the Leader.
type Client struct {
	cfg *config
	tr  transport // owned by the run goroutine
	// herald wakes the run goroutine's elections (see herald.go); owned by it.
	herald *herald
	// dirChecked: Dir passed lock.PrepareDir; false only for a LeadNever member that
	// found no Dir at Join, until it appears (see dirReady). Owned by the run goroutine.
	dirChecked bool
	trk        atomic.Pointer[transportKind] // what Stats reports

	ep      atomic.Pointer[epoch]
	epochMu sync.Mutex // serialises epoch replacement (the run loop and Close)

	subs   localSubs // this process's subscriptions, by topic
	regs   registrations
	subsWG sync.WaitGroup

	closing   chan struct{}
	life      context.Context // ends when Close begins
	endLife   context.CancelFunc
	closeOnce sync.Once
	closeErr  error         // Service.Close's error at the handover; written before runDone closes
	runDone   chan struct{} // closed when the run goroutine has ended (handed over, lock released)
	closed    chan struct{} // closed when Close has finished everything (finishClose)
	joined    chan error    // the first election's outcome, read once by Join

	roles   chan RoleInfo
	rolesWG sync.WaitGroup

	stats   counters
	refused refusals // what this member's Leader terms refused, logged and counted
	// inUserCode counts the goroutines inside user code this Client called, by kind
	// (see usercode.go): Close uses it to tell its own callbacks from another Client's.
	inUserCode [3]atomic.Int32
}

// Join elects, then returns a Client ready to serve calls as Leader or Follower. It
// returns an error if cfg is invalid (ErrConfig), if this member won the election and
// NewService failed (ErrServiceUnavailable, wrapping NewService's error), if the Leader
// refuses it (ErrUnauthorized, ErrIdentityMismatch), or if ctx ends before the member
// could lead or reach a Leader (ErrNoLeader); the error says what was found (who holds
// the lock, the socket's state).
func Join(ctx context.Context, cfg Config) (*Client, error) {
	vc, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:        vc,
		dirChecked: !vc.dirMissing,
		closing:    make(chan struct{}),
		runDone:    make(chan struct{}),
		closed:     make(chan struct{}),
		joined:     make(chan error, 1),
	}
	c.refused.log = vc.Logger
	c.setTransport(vc.transport, vc.transportWhy)
	c.life, c.endLife = context.WithCancel(context.Background())
	c.subs = localSubs{c: c, topics: make(map[subKey]*localTopic)}
	c.ep.Store(&epoch{changed: make(chan struct{}), role: RoleInfo{Role: RoleElecting, At: time.Now()}})
	if vc.OnRoleChange != nil {
		c.roles = make(chan RoleInfo, 64)
		c.rolesWG.Add(1)
		go c.dispatchRoles()
	}
	go c.run(ctx)
	select {
	case err := <-c.joined:
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		// run sends on joined exactly once; it notices ctx too and reports the diagnosis.
		err := <-c.joined
		if err == nil {
			return c, nil
		}
		c.Close()
		return nil, err
	}
}

// Role returns the member's current role and term.
func (c *Client) Role() RoleInfo { return c.ep.Load().role }

// Name returns the cluster name.
func (c *Client) Name() string { return c.cfg.Name }

// Dir returns the directory holding the lock and the socket.
func (c *Client) Dir() string { return c.cfg.Dir }

func (c *Client) currentBackend() backend { return c.ep.Load().b }

// setEpoch publishes a new backend (nil while electing) and wakes every waiting caller.
func (c *Client) setEpoch(b backend, role RoleInfo) {
	c.epochMu.Lock()
	old := c.ep.Load()
	c.ep.Store(&epoch{b: b, role: role, changed: make(chan struct{})})
	close(old.changed)
	c.epochMu.Unlock()
	if old.role.Role != role.Role || old.role.Term != role.Term {
		c.cfg.Logger.Info("cluster: role", "name", c.cfg.Name, "role", role.Role.String(), "term", role.Term, "leader_pid", role.LeaderPID)
		if c.roles != nil {
			select {
			case c.roles <- role:
			default:
				c.cfg.Logger.Warn("cluster: OnRoleChange is too slow; a role change was not reported", "role", role.Role.String())
			}
		}
	}
}

// setCause makes calls fail with err, at once, until the next epoch (electing only).
func (c *Client) setCause(err error) {
	c.epochMu.Lock()
	defer c.epochMu.Unlock()
	old := c.ep.Load()
	if old.b != nil {
		return
	}
	c.ep.Store(&epoch{role: old.role, changed: make(chan struct{}), cause: err})
	close(old.changed)
}

// clearCause ends a cause matching kind (electing only): calls wait for a Leader again.
func (c *Client) clearCause(kind error) {
	c.epochMu.Lock()
	defer c.epochMu.Unlock()
	old := c.ep.Load()
	if old.b != nil || old.cause == nil || !errors.Is(old.cause, kind) {
		return
	}
	c.ep.Store(&epoch{role: old.role, changed: make(chan struct{})})
	close(old.changed)
}

func (c *Client) dispatchRoles() {
	defer c.rolesWG.Done()
	for r := range c.roles {
		c.roleChanged(r)
	}
}

// callContext applies Config.CallTimeout to a ctx without a deadline. The context is a
// callCtx, which costs one allocation until someone waits on its Done.
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.cfg.CallTimeout < 0 {
		return ctx, func() {}
	}
	cc := withDeadline(ctx, time.Now().Add(c.cfg.CallTimeout))
	return cc, cc.end
}

// callDeadline is callContext for the hot calls (Invoke, InvokeOneway, Publish): the
// same context, and the callCtx to end when the call returns (nil for none), which
// spares them the allocation of a cancel func. now is the call's start.
func (c *Client) callDeadline(ctx context.Context, now time.Time) (context.Context, *callCtx) {
	if _, ok := ctx.Deadline(); ok || c.cfg.CallTimeout < 0 {
		return ctx, nil
	}
	cc := withDeadline(ctx, now.Add(c.cfg.CallTimeout))
	return cc, cc
}

func (c *Client) callTimeoutOr(d time.Duration) time.Duration {
	if c.cfg.CallTimeout > 0 {
		return c.cfg.CallTimeout
	}
	return d
}

// do runs op on the current backend, waiting (within ctx) for one while electing, and
// retrying on the next backend when the request provably never left this process. It
// counts the call in Stats.
// start is when the call began (a clock read costs tens of nanoseconds on some
// machines: the hot calls share theirs with callDeadline).
func (c *Client) do(ctx context.Context, kind opKind, name string, start time.Time, op func(backend) error) error {
	c.stats.calls.Add(1)
	err := c.doLoop(ctx, kind.String(), name, op)
	timeout := false
	if err != nil {
		c.stats.errors.Add(1)
		switch {
		case errors.Is(err, ErrTimeout):
			c.stats.timeouts.Add(1)
			timeout = true
		case errors.Is(err, ErrLeaderLost):
			c.stats.leaderLost.Add(1)
		}
	}
	c.stats.ops[kind].done(time.Since(start), err, timeout)
	return err
}

func (c *Client) doLoop(ctx context.Context, opName, name string, op func(backend) error) error {
	for {
		// A context that has already ended sends nothing: otherwise the outcome would
		// depend on whether a fast answer or the cancellation is noticed first.
		if ctx.Err() != nil {
			return ctxErr(ctx, opName, name)
		}
		ep := c.ep.Load()
		if ep.b != nil {
			err := op(ep.b)
			if !errors.Is(err, errNotSent) {
				return err
			}
		} else if ep.cause != nil {
			select {
			case <-c.closing:
				return fmt.Errorf("%s %q: %w", opName, name, ErrClosed)
			default:
			}
			return fmt.Errorf("cluster: %s %q: %w", opName, name, ep.cause)
		}
		select {
		case <-ep.changed:
		case <-c.closing:
			return fmt.Errorf("%s %q: %w", opName, name, ErrClosed)
		case <-ctx.Done():
			return ctxErr(ctx, opName, name)
		}
	}
}

// checkMessage checks what a call sends, the same way in every role: the limits are
// those of a Leader with this member's Config, on this member's transport.
func (c *Client) checkMessage(op, name string, m Message) error {
	if name == "" {
		noun := "topic"
		if op == "invoke" {
			noun = "method"
		}
		return fmt.Errorf("%w: %s: the %s name must not be empty", ErrConfig, op, noun)
	}
	if max := c.cfg.lim.MaxNameLen; len(name) > max {
		return tooLarge("cluster: %s: the name is %d bytes, over the limit of %d (Config.Limits.MaxNameLen, on every member)", op, len(name), max)
	}
	what := "the message"
	if op == "invoke" {
		what = "the request"
	}
	return checkWire(m, c.passesFDs(), c.cfg.MaxBody, op, name, what)
}

// passesFDs reports whether this member's connections pass file descriptors.
func (c *Client) passesFDs() bool { return c.trk.Load().kind == "unix" && runtime.GOOS == "linux" }

// checkResponse applies to a response the Leader's Service gave its own process the
// checks a Follower's response goes through (see checkWire), and makes a failure the
// error a Follower would get.
func (c *Client) checkResponse(method string, out Message) error {
	return responseErr(c.checkReceived(out, "invoke", method, "the response"), method)
}

// checkReceived applies to what the Leader's Service gives its own process the checks
// that a Follower with this member's Config applies on receipt: the frame limits
// (checkWire) and Config.MaxBlob (checkBlobSize).
func (c *Client) checkReceived(m Message, op, name, what string) error {
	fdOK := c.passesFDs()
	if err := checkWire(m, fdOK, c.cfg.MaxBody, op, name, what); err != nil {
		return err
	}
	return checkBlobSize(m, fdOK, c.cfg.MaxBlob, op, name, what)
}

// Invoke calls method on the Leader's Service and returns its response. It blocks
// until the response arrives, ctx ends (ErrTimeout on a deadline; Config.CallTimeout
// applies when ctx has none), or the Leader is lost mid-call (ErrLeaderLost: the call
// may or may not have run; it is not re-sent). While no Leader is reachable it waits
// for the next one. A Service error is returned as a *RemoteError.
func (c *Client) Invoke(ctx context.Context, method string, req Message) (Message, error) {
	if err := c.checkMessage("invoke", method, req); err != nil {
		return Message{}, err
	}
	start := time.Now()
	ctx, cc := c.callDeadline(ctx, start)
	if cc != nil {
		defer cc.end()
	}
	var out Message
	err := c.do(ctx, opInvoke, method, start, func(b backend) error {
		var err error
		out, err = b.invoke(ctx, method, req, false)
		return err
	})
	return out, err
}

// InvokeOneway calls method without waiting for a response: it returns once the
// request is handed to the Leader (queued on its connection, or started locally on the
// Leader). The Service's result and error are discarded (errors are logged by the
// Leader). It waits for a Leader within ctx like Invoke.
func (c *Client) InvokeOneway(ctx context.Context, method string, req Message) error {
	if err := c.checkMessage("invoke", method, req); err != nil {
		return err
	}
	start := time.Now()
	ctx, cc := c.callDeadline(ctx, start)
	if cc != nil {
		defer cc.end()
	}
	return c.do(ctx, opOneway, method, start, func(b backend) error {
		_, err := b.invoke(ctx, method, req, true)
		return err
	})
}

// Publish hands msg for topic to the Leader's Service (Service.Publish) and waits for
// its verdict. It does not deliver to local subscribers by itself: the server does,
// through the one subscription the Leader holds.
func (c *Client) Publish(ctx context.Context, topic string, msg Message) error {
	if err := c.checkMessage("publish", topic, msg); err != nil {
		return err
	}
	start := time.Now()
	ctx, cc := c.callDeadline(ctx, start)
	if cc != nil {
		defer cc.end()
	}
	return c.do(ctx, opPublish, topic, start, func(b backend) error { return b.publish(ctx, topic, msg) })
}

// SubscribeOption changes how Subscribe delivers.
type SubscribeOption func(*subscribeOptions)

type subscribeOptions struct{ shared bool }

// Shared makes a work-sharing subscription: each
// message of the topic goes to exactly one of the topic's shared subscribers on the
// whole host, in turn across processes and, within a process, across its shared
// subscribers. Broadcast subscribers of the same topic still get every message. A shared
// subscriber gets no replay of the latest message (it was already handled once).
//
// Delivery is at most once: a message on its way to a process that dies (or whose
// subscriber closes) before the callback runs is lost, not redelivered to another
// subscriber. Use Invoke when work must be acknowledged.
func Shared() SubscribeOption { return func(o *subscribeOptions) { o.shared = true } }

// Subscribe calls fn with every message on topic until the Subscription is closed.
// However many subscribers there are on the host, the Leader's Service holds one
// subscription per topic. The latest message of the topic, if any, is delivered to fn
// at once (use Subscription.First to wait for it). Subscribe returns when the Leader has
// acknowledged the subscription. It survives failover: the subscription is
// re-established on every new Leader. fn runs on a goroutine of its own (see
// Subscription for the queueing policy). With Shared, each message goes to one
// subscriber instead of all.
func (c *Client) Subscribe(ctx context.Context, topic string, fn func(Message), opts ...SubscribeOption) (*Subscription, error) {
	var o subscribeOptions
	for _, opt := range opts {
		opt(&o)
	}
	if fn == nil {
		return nil, fmt.Errorf("%w: Subscribe: fn must not be nil", ErrConfig)
	}
	if err := c.checkMessage("subscribe", topic, Message{}); err != nil {
		return nil, err
	}
	select {
	case <-c.closing:
		return nil, fmt.Errorf("subscribe %q: %w", topic, ErrClosed)
	default:
	}
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	s := newSubscription(c, topic, o.shared, fn, c.cfg.SubscriptionBuffer)
	lt := c.subs.add(s)
	err := c.do(ctx, opSubscribe, topic, time.Now(), func(b backend) error {
		err := c.subs.ensure(ctx, lt, b)
		if errors.Is(err, ErrLeaderLost) {
			// The subscription stays registered and the next Leader gets it anyway;
			// wait for that one to acknowledge.
			return fmt.Errorf("%w: %w", errNotSent, err)
		}
		return err
	})
	if err != nil {
		s.stop()
		rctx, rcancel := c.callContext(context.Background())
		_ = c.subs.remove(rctx, s)
		rcancel()
		return nil, err
	}
	return s, nil
}

// Close leaves the cluster. A Leader hands over gracefully: it stops accepting, tells
// its Followers goodbye (they elect the next Leader at once), lets in-flight calls
// finish (bounded), closes the Service, removes its socket and releases the lock. A
// Follower closes its connection. Calls still waiting return ErrClosed; subscription
// callbacks stop, and when Close returns none is running. Close returns the Service's
// Close error, if any (a Leader's), the same every time; it is safe to call
// concurrently and more than once.
//
// Close may also be called from code the library calls:
//   - from a subscription callback or OnRoleChange, it returns once the handover is
//     done, without waiting for callbacks to return (its own cannot, before Close does);
//   - from a Service method (or NewService, a Withdrawer or Service.Close) on the
//     Leader, it starts the handover and returns nil at once: the handover lets
//     in-flight calls finish, the calling one included, so it cannot be waited for
//     there. A later Close from elsewhere waits for it and returns its error.
//
// A callback must not wait for another goroutine's Close: that Close waits for the
// callback to return.
func (c *Client) Close() error {
	in := calledFromUserCode() & c.running()
	c.closeOnce.Do(func() {
		close(c.closing)
		c.endLife()
		go c.finishClose()
	})
	switch {
	case in&inService != 0:
		return nil
	case in != 0:
		<-c.runDone
	default:
		<-c.closed
	}
	return c.closeErr
}

// finishClose waits for the run goroutine to hand over, then stops the subscriptions
// and the OnRoleChange dispatcher and waits for their callbacks to return.
func (c *Client) finishClose() {
	defer close(c.closed)
	<-c.runDone
	for _, lt := range c.subs.snapshot() {
		c.subs.mu.Lock()
		for _, s := range lt.out.broadcast {
			s.stop()
		}
		for _, s := range lt.out.shared {
			s.stop()
		}
		c.subs.mu.Unlock()
	}
	c.subsWG.Wait()
	c.subs.releaseLatest()
	if c.roles != nil {
		close(c.roles)
		c.rolesWG.Wait()
	}
}

func pid() int { return os.Getpid() }

type transportKind struct{ kind, why, where string }

func (k *transportKind) transport() Transport {
	if k.kind == "tcp" {
		return TransportTCP
	}
	return TransportUnix
}

// setTransport installs the transport (run goroutine only, or Join before it starts)
// and logs the choice once.
func (c *Client) setTransport(t Transport, why string) {
	c.tr = newTransport(t, c.cfg)
	c.trk.Store(&transportKind{kind: c.tr.kind(), why: why, where: c.tr.where()})
	c.cfg.Logger.Info("cluster: transport", "name", c.cfg.Name, "transport", c.tr.kind(), "why", why, "address", c.tr.where())
}

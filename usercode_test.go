package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/internal/member"
	"github.com/cluster-client-go/cluster/lock"
)

// What the application's own code does wrong (a Service that panics or fails to build,
// a callback that closes the Client) is recovered, reported and survived.

var (
	errTestNotFound = errors.New("test: not found")
	errTestDown     = errors.New("test: upstream down")
)

// self is a member process's Client, for the Service methods that use it.
var self atomic.Pointer[cluster.Client]

// testErrors is the Config.Errors of a member: Errors "none" registers nothing.
func testErrors(args memberArgs) map[string]error {
	if args.Errors == "none" {
		return nil
	}
	return map[string]error{"test.not-found": errTestNotFound}
}

// withFaults gives a member's Service the faults the tests need. NewService fails with
// errTestDown while the file args.NewServiceFailFile exists. Methods: "panic" panics;
// "not-found" fails with errTestNotFound (wrapped); "big" answers as many bytes as its
// request says; "close" closes the member's Client from inside the Service.
func withFaults(args memberArgs, next func(context.Context) (cluster.Service, error)) func(context.Context) (cluster.Service, error) {
	return func(ctx context.Context) (cluster.Service, error) {
		if f := args.NewServiceFailFile; f != "" {
			if _, err := os.Stat(f); err == nil {
				return nil, fmt.Errorf("dialing the upstream: %w", errTestDown)
			}
		}
		svc, err := next(ctx)
		if err != nil {
			return nil, err
		}
		return faultService{svc}, nil
	}
}

type faultService struct{ cluster.Service }

func (f faultService) Invoke(ctx context.Context, method string, req cluster.Message) (cluster.Message, error) {
	switch method {
	case "panic":
		var m map[string]int
		m["boom"]++ // a nil map: a runtime error, as a real bug would be
	case "not-found":
		return cluster.Message{}, fmt.Errorf("user %s: %w", req.Data, errTestNotFound)
	case "big":
		n, _ := strconv.Atoi(string(req.Data))
		return cluster.Message{Data: make([]byte, n)}, nil
	case "close":
		if c := self.Load(); c != nil {
			return cluster.Message{}, c.Close()
		}
	}
	return f.Service.Invoke(ctx, method, req)
}

func (f faultService) Withdraw(ctx context.Context, topic string, msg cluster.Message) error {
	if wd, ok := f.Service.(cluster.Withdrawer); ok {
		return wd.Withdraw(ctx, topic, msg)
	}
	return nil
}

// A panicking method, called again and again from a Follower and from the Leader, is
// an error for each caller; the same Leader keeps serving with its one connection.
func TestProcessServicePanicIsAnErrorNotACrash(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		leader := tc.start(memberOpts{})
		require.Equal(t, "leader", leader.joined().Role)
		f := tc.start(memberOpts{})
		require.Equal(t, "follower", f.joined().Role)
		sub := f.send(command{Op: "subscribe", Name: "news"})
		require.Empty(t, f.result(sub).Err)

		for i := 0; i < 3; i++ {
			r := f.do(command{Op: "invoke", Name: "panic", Data: "x"})
			require.Equal(t, "panic", r.Kind, "follower's call %d: %s", i, r.Err)
			require.Contains(t, r.Err, `Service.Invoke "panic" panicked: assignment to entry in nil map`)
		}
		// The Leader's own call gets the same error, not a panic in its goroutine.
		r := leader.do(command{Op: "invoke", Name: "panic"})
		require.Equal(t, "panic", r.Kind, r.Err)
		require.Contains(t, r.Err, `Service.Invoke "panic" panicked: assignment to entry in nil map`)

		// Nothing else changed: the same Leader, one upstream connection, the
		// subscription still delivering.
		r = f.do(command{Op: "invoke", Name: "echo", Data: "still here"})
		require.Empty(t, r.Err)
		require.Equal(t, "still here", r.Data)
		st := f.role()
		require.Equal(t, "follower", st.Role)
		require.Equal(t, leader.pid, st.LeaderPID)
		require.Equal(t, 1, tc.upstream.TotalConns())
		require.Equal(t, 1, tc.upstream.Push("news", []byte("after the panics")))
		f.waitMessage(sub, "after the panics")

		var lst cluster.Stats
		require.NoError(t, jsonUnmarshal(leader.role().Data, &lst))
		require.EqualValues(t, 4, lst.Panics)
		require.Equal(t, uint64(1), lst.Term)
		// Logged once each, at ERROR, with the stack.
		logs := leader.Stderr()
		require.Equal(t, 4, strings.Count(logs, "recovered a panic in application code"), logs)
		require.Contains(t, logs, "level=ERROR")
		require.Contains(t, logs, "faultService.Invoke")
	})
}

// An error registered in Config.Errors keeps its identity across processes; one the
// receiver does not know arrives as a RemoteError with its code and text.
func TestProcessRegisteredErrorsKeepTheirIdentity(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		leader := tc.start(memberOpts{})
		require.Equal(t, "leader", leader.joined().Role)
		f := tc.start(memberOpts{})
		f.joined()
		stranger := tc.start(memberOpts{args: memberArgs{Errors: "none"}})
		stranger.joined()

		want := `cluster: invoke "not-found": user 7: test: not found`
		for _, p := range []*proc{leader, f} {
			r := p.do(command{Op: "invoke", Name: "not-found", Data: "7"})
			require.Equal(t, "not-found", r.Kind, r.Err)
			require.Equal(t, want, r.Err)
		}
		r := stranger.do(command{Op: "invoke", Name: "not-found", Data: "7"})
		require.Equal(t, "remote", r.Kind)
		require.Equal(t, want, r.Err)
		// Unregistered errors are what they always were.
		r = f.do(command{Op: "invoke", Name: "no-such-method"})
		require.Equal(t, "remote", r.Kind)
	})
}

// In process, the RemoteError a Follower gets carries the codes and unwraps to the
// Follower's own registered error.
func TestRegisteredErrorsUnwrapOnEveryRole(t *testing.T) {
	tc := newTestCluster(t)
	reg := func(cfg *cluster.Config) {
		cfg.Errors = map[string]error{"test.not-found": errTestNotFound, "test.down": errTestDown}
		cfg.NewService = withFaults(memberArgs{}, cfg.NewService)
	}
	leader := tc.join(reg)
	follower := tc.join(reg)
	require.Equal(t, cluster.RoleFollower, follower.Role().Role)
	for _, c := range []*cluster.Client{leader, follower} {
		_, err := c.Invoke(context.Background(), "not-found", cluster.Message{Data: []byte("7")})
		require.ErrorIs(t, err, errTestNotFound)
		require.NotErrorIs(t, err, errTestDown)
		var re *cluster.RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, []string{"test.not-found"}, re.Codes)
		require.Equal(t, "invoke", re.Op)
		require.Equal(t, "not-found", re.Name)

		_, err = c.Invoke(context.Background(), "panic", cluster.Message{})
		require.ErrorIs(t, err, cluster.ErrServicePanic)
		require.ErrorAs(t, err, &re)
		require.Empty(t, re.Codes)
	}
	require.EqualValues(t, 2, leader.Stats().Panics)
	require.Zero(t, follower.Stats().Panics, "the panics happened in the Leader's process")
}

func TestConfigErrorsAreValidated(t *testing.T) {
	tc := newTestCluster(t)
	for _, tt := range []struct {
		errs map[string]error
		want string
	}{
		{map[string]error{"": errTestDown}, `code ""`},
		{map[string]error{"not found": errTestDown}, `code "not found"`},
		{map[string]error{strings.Repeat("x", 65): errTestDown}, "1 to 64 bytes"},
		{map[string]error{"down": nil}, `code "down" maps to a nil error`},
	} {
		_, err := cluster.Join(context.Background(), cluster.Config{Name: "x", Dir: tc.dir, NewService: upstream0, Errors: tt.errs})
		require.ErrorIs(t, err, cluster.ErrConfig)
		require.ErrorContains(t, err, "Errors")
		require.ErrorContains(t, err, tt.want)
	}
}

func upstream0(context.Context) (cluster.Service, error) { return nil, errTestDown }

// Join reports a NewService that fails or panics at once, with the cause reachable, and
// leaves the lock free for a member that can lead.
func TestJoinReportsAFailingNewService(t *testing.T) {
	tc := newTestCluster(t)
	for _, tt := range []struct {
		name       string
		newService func(context.Context) (cluster.Service, error)
		is         []error
		says       string
	}{
		{"error", func(context.Context) (cluster.Service, error) {
			return nil, fmt.Errorf("dialing the upstream: %w", errTestDown)
		}, []error{cluster.ErrServiceUnavailable, errTestDown}, "dialing the upstream: test: upstream down"},
		{"nil service", func(context.Context) (cluster.Service, error) { return nil, nil },
			[]error{cluster.ErrServiceUnavailable}, "NewService returned a nil Service and no error"},
		{"panic", func(context.Context) (cluster.Service, error) { panic("boom") },
			[]error{cluster.ErrServiceUnavailable, cluster.ErrServicePanic}, "NewService panicked: boom"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// No deadline, as in the README: Join must not retry until ctx ends.
			c, err := cluster.Join(context.Background(), cluster.Config{
				Name: tc.name, Dir: tc.dir, NewService: tt.newService, Logger: slog.New(slog.DiscardHandler),
			})
			require.Nil(t, c)
			for _, target := range tt.is {
				require.ErrorIs(t, err, target)
			}
			require.NotErrorIs(t, err, cluster.ErrNoLeader)
			require.ErrorContains(t, err, tt.says)
			require.ErrorContains(t, err, "this member won the election")

			// The lock is free: a member that can build its Service leads.
			good := tc.join(nil)
			require.Equal(t, cluster.RoleLeader, good.Role().Role)
			require.NoError(t, good.Close())
		})
	}
}

// A member promoted after a failover whose NewService fails steps down, backs off
// instead of burning a term every few milliseconds, and its callers learn why at once;
// once the Service can be built again, a member leads and serves.
func TestProcessFailingNewServiceAfterFailover(t *testing.T) {
	tc := newTestCluster(t)
	flag := filepath.Join(tc.dir, "upstream-down")
	o := memberOpts{args: memberArgs{NewServiceFailFile: flag}}
	leader := tc.start(o)
	require.Equal(t, "leader", leader.joined().Role)
	survivors := []*proc{tc.start(o), tc.start(o)}
	for _, p := range survivors {
		require.Equal(t, "follower", p.joined().Role)
	}
	require.NoError(t, os.WriteFile(flag, nil, 0o600))
	leader.Kill()

	// Callers do not wait out their 30 s deadline: they are told the cause.
	for _, p := range survivors {
		p.wait(func(e event) bool { return e.Ev == "role" && e.Role == "electing" })
		for {
			r := p.do(command{Op: "invoke", Name: "echo", Data: "x", Timeout: "30s"})
			if r.Kind == "unavailable" {
				require.Contains(t, r.Err, "test: upstream down")
				require.Contains(t, r.Err, "NewService failed")
				break
			}
			// Until this member has tried to lead itself, it waits for a Leader; it
			// tries within a moment, since nobody leads.
			require.Equal(t, "timeout", r.Kind, "%s", r.Err)
		}
	}
	// Terms are not burned in a tight loop: with two members backing off from 250 ms
	// doubling, a couple of seconds cost a handful of attempts, not hundreds.
	owner, err := lock.ReadOwner(filepath.Join(tc.dir, tc.name+".lock"))
	require.NoError(t, err)
	before := owner.Term
	time.Sleep(2 * time.Second)
	owner, err = lock.ReadOwner(filepath.Join(tc.dir, tc.name+".lock"))
	require.NoError(t, err)
	require.LessOrEqual(t, owner.Term-before, uint64(12), "terms burned in 2 s")

	// The upstream is back: within the backoff's bound, a member leads and serves.
	require.NoError(t, os.Remove(flag))
	for _, p := range survivors {
		p.wait(func(e event) bool {
			return e.Ev == "role" && (e.Role == "leader" || e.Role == "follower") && e.Term > 1
		})
		r := p.do(command{Op: "invoke", Name: "echo", Data: "back", Timeout: "30s"})
		require.Empty(t, r.Err)
		require.Equal(t, "back", r.Data)
	}
	require.Equal(t, 1, tc.upstream.Conns())
}

// Close can be called from every piece of code the library calls, and returns.
func TestCloseFromInsideCallbacks(t *testing.T) {
	t.Run("subscription callback", func(t *testing.T) {
		tc := newTestCluster(t)
		leader := tc.join(nil)
		for _, c := range []*cluster.Client{tc.join(nil), leader} { // a Follower, then the Leader
			closed := make(chan error, 1)
			_, err := c.Subscribe(context.Background(), "news", func(cluster.Message) { closed <- c.Close() })
			require.NoError(t, err)
			require.NoError(t, tc.upstream.WaitSubscribers(context.Background(), "news", 1))
			tc.upstream.Push("news", []byte("close now"))
			select {
			case err := <-closed:
				require.NoError(t, err)
			case <-time.After(waitTimeout):
				t.Fatal("Close inside a subscription callback did not return")
			}
			require.Equal(t, cluster.RoleClosed, c.Role().Role)
			require.NoError(t, c.Close()) // and from outside, after it
		}
	})
	t.Run("OnRoleChange", func(t *testing.T) {
		tc := newTestCluster(t)
		closed := make(chan error, 1)
		var c atomic.Pointer[cluster.Client]
		ready := make(chan struct{})
		cl := tc.join(func(cfg *cluster.Config) {
			cfg.OnRoleChange = func(r cluster.RoleInfo) {
				if r.Role == cluster.RoleLeader {
					<-ready
					closed <- c.Load().Close()
				}
			}
		})
		c.Store(cl)
		close(ready)
		select {
		case err := <-closed:
			require.NoError(t, err)
		case <-time.After(waitTimeout):
			t.Fatal("Close inside OnRoleChange did not return")
		}
		require.Equal(t, cluster.RoleClosed, cl.Role().Role)
		require.NoError(t, cl.Close())
	})
	t.Run("Service method", func(t *testing.T) {
		tc := newTestCluster(t)
		faults := func(cfg *cluster.Config) { cfg.NewService = withFaults(memberArgs{}, cfg.NewService) }
		leader := tc.join(faults)
		follower := tc.join(faults)
		self.Store(leader)
		t.Cleanup(func() { self.Store(nil) })
		// From the Leader's own call, and from a Follower's call that the Leader serves.
		_, err := leader.Invoke(context.Background(), "close", cluster.Message{})
		require.NoError(t, err)
		require.NoError(t, leader.Close())
		require.Equal(t, cluster.RoleClosed, leader.Role().Role)
		// The Follower's next call goes to its next Leader: itself.
		out, err := follower.Invoke(context.Background(), "echo", cluster.Message{Data: []byte("x")})
		require.NoError(t, err)
		require.Equal(t, "x", string(out.Data))
		require.Equal(t, cluster.RoleLeader, follower.Role().Role)

		self.Store(follower)
		next := tc.join(faults)
		_, err = next.Invoke(context.Background(), "close", cluster.Message{})
		require.NoError(t, err, "the call that closed the Leader is answered: the handover drains it")
		require.NoError(t, follower.Close())
		_, err = next.Invoke(context.Background(), "echo", cluster.Message{})
		require.NoError(t, err)
		require.Equal(t, cluster.RoleLeader, next.Role().Role)
	})
}

// A panic in a subscription callback or OnRoleChange is recovered: the next message is
// delivered, and the panic counted.
func TestCallbackPanicsAreRecovered(t *testing.T) {
	tc := newTestCluster(t)
	var roles atomic.Int32
	c := tc.join(func(cfg *cluster.Config) {
		cfg.OnRoleChange = func(cluster.RoleInfo) {
			roles.Add(1)
			panic("role change: boom")
		}
	})
	got := make(chan string, 2)
	_, err := c.Subscribe(context.Background(), "news", func(m cluster.Message) {
		got <- string(m.Data)
		if string(m.Data) == "first" {
			panic("callback: boom")
		}
	})
	require.NoError(t, err)
	require.NoError(t, tc.upstream.WaitSubscribers(context.Background(), "news", 1))
	tc.upstream.Push("news", []byte("first"))
	require.Equal(t, "first", recv(t, got))
	tc.upstream.Push("news", []byte("second"))
	require.Equal(t, "second", recv(t, got))
	require.Eventually(t, func() bool { return c.Stats().Panics == 2 }, waitTimeout, time.Millisecond)
	require.NoError(t, c.Close())
	require.EqualValues(t, 2, roles.Load(), "OnRoleChange still gets every change after a panic")
}

// The typed layer refuses what the raw one refuses, naming the argument; empty method
// and topic names are refused everywhere.
func TestArgumentsAreValidatedInEveryLayer(t *testing.T) {
	tc := newTestCluster(t)
	c := tc.join(nil)
	ctx := context.Background()
	check := func(err error, says string) {
		t.Helper()
		require.ErrorIs(t, err, cluster.ErrConfig)
		require.ErrorContains(t, err, says)
	}
	_, err := cluster.Topic[string]{Name: "news"}.Subscribe(ctx, c, nil)
	check(err, `Topic.Subscribe "news": fn must not be nil`)
	_, err = cluster.Topic[string]{Name: "news"}.Subscribe(ctx, nil, func(string) {})
	check(err, `Topic.Subscribe "news": the Client must not be nil`)
	_, err = cluster.Method[int, int]{Name: "add"}.Invoke(ctx, nil, 1)
	check(err, `Method.Invoke "add": the Client must not be nil`)
	_, err = cluster.Method[int, int]{Name: "add"}.Handle(ctx, cluster.Message{Data: []byte("1")}, nil)
	check(err, `Method.Handle "add": fn must not be nil`)
	check(cluster.Topic[string]{Name: "news"}.Publish(ctx, nil, "x"), `Topic.Publish "news": the Client must not be nil`)
	_, err = c.Subscribe(ctx, "news", nil)
	check(err, "fn must not be nil")

	_, err = c.Invoke(ctx, "", cluster.Message{})
	check(err, "invoke: the method name must not be empty")
	check(c.InvokeOneway(ctx, "", cluster.Message{}), "the method name must not be empty")
	check(c.Publish(ctx, "", cluster.Message{}), "publish: the topic name must not be empty")
	_, err = c.Subscribe(ctx, "", func(cluster.Message) {})
	check(err, "subscribe: the topic name must not be empty")
	_, err = c.Register(ctx, "", cluster.Message{})
	check(err, "register: the topic name must not be empty")
	_, err = cluster.Method[int, int]{}.Invoke(ctx, c, 1)
	check(err, "the method name must not be empty")
	_, err = cluster.Topic[string]{}.Subscribe(ctx, c, func(string) {})
	check(err, "the topic name must not be empty")
	require.Zero(t, c.Stats().Subscriptions)
}

// What works in one process works across processes, and what fails fails alike: a
// response over MaxBody is refused on the Leader's own call as on a Follower's, with the
// same error, which says the size, the limit and the remedy once.
func TestProcessLimitsAreTheSameInEveryRole(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		leader := tc.start(memberOpts{})
		require.Equal(t, "leader", leader.joined().Role)
		f := tc.start(memberOpts{})
		f.joined()
		size := strconv.Itoa(frame.DefaultMaxBody + 1)
		want := fmt.Sprintf(`cluster: invoke "big": the response is %d bytes, over the receiver's limit of %d `+
			`(Config.MaxBody: raise it on every member, or send large payloads as a Message.Blob)`, frame.DefaultMaxBody+1, frame.DefaultMaxBody)
		for _, p := range []*proc{leader, f} {
			r := p.do(command{Op: "invoke", Name: "big", Data: size})
			require.Equal(t, "too-large", r.Kind, r.Err)
			require.Equal(t, want, r.Err)
		}
		// At the limit, both are served.
		for _, p := range []*proc{leader, f} {
			r := p.do(command{Op: "invoke", Name: "big", Data: strconv.Itoa(frame.DefaultMaxBody)})
			require.Empty(t, r.Err)
			require.Equal(t, fmt.Sprintf("<%d bytes>", frame.DefaultMaxBody), r.Data)
		}
	})
}

// A member that never leads creates nothing: with a mistyped Dir it waits for a Leader,
// says why it found none, and leaves no directory behind.
func TestLeadNeverCreatesNoDir(t *testing.T) {
	tc := newTestCluster(t)
	dir := filepath.Join(tc.dir, "typo", "cluster")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := cluster.Join(ctx, cluster.Config{Name: tc.name, Dir: dir, Lead: cluster.LeadNever, Logger: slog.New(slog.DiscardHandler)})
	require.ErrorIs(t, err, cluster.ErrNoLeader)
	require.ErrorContains(t, err, dir+" does not exist: no leader has run there yet (a LeadNever member does not create it; check Config.Dir)")
	_, err = os.Stat(filepath.Join(tc.dir, "typo"))
	require.ErrorIs(t, err, os.ErrNotExist)

	// Started before any Leader created the Dir, it joins the first one.
	dir = filepath.Join(tc.dir, "later")
	joined := make(chan error, 1)
	go func() {
		c, err := cluster.Join(context.Background(), cluster.Config{Name: tc.name, Dir: dir, Lead: cluster.LeadNever, Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			t.Cleanup(func() { c.Close() })
			if r := c.Role(); r.Role != cluster.RoleFollower {
				err = fmt.Errorf("joined as %v", r.Role)
			}
		}
		joined <- err
	}()
	leader := tc.join(func(cfg *cluster.Config) { cfg.Dir = dir })
	require.Equal(t, cluster.RoleLeader, leader.Role().Role)
	select {
	case err := <-joined:
		require.NoError(t, err)
	case <-time.After(waitTimeout):
		t.Fatal("the LeadNever member did not join the Leader that created Dir")
	}
}

// Two programs that share a Name and a Dir by mistake are never served each other's
// answers when they set Config.Identity: the second is refused, with both identities.
func TestProcessServiceIdentityMismatchIsRefused(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		leader := tc.start(memberOpts{cfg: member.Config{Identity: "billing/v1"}})
		require.Equal(t, "leader", leader.joined().Role)
		same := tc.start(memberOpts{cfg: member.Config{Identity: "billing/v1"}})
		require.Equal(t, "follower", same.joined().Role)
		for _, id := range []string{"users/v1", "billing/v2", ""} {
			other := tc.start(memberOpts{cfg: member.Config{Identity: id}})
			e := joinError(t, other)
			require.Equal(t, "identity", e.Kind, e.Err)
			require.Contains(t, e.Err, fmt.Sprintf(`serves Config.Identity "billing/v1"; this member's is %q`, id))
		}
		// The Leader logged the refusals, and still serves its own.
		r := same.do(command{Op: "invoke", Name: "echo", Data: "x"})
		require.Empty(t, r.Err)
		require.Equal(t, 1, tc.upstream.TotalConns())
	})
}

// A member that joined and then finds a Leader of another identity after a failover
// (an incompatible version took over) is not served by it: its calls fail at once.
func TestProcessIdentityMismatchAfterFailover(t *testing.T) {
	tc := newTestCluster(t)
	old := tc.start(memberOpts{cfg: member.Config{Identity: "v1"}})
	require.Equal(t, "leader", old.joined().Role)
	f := tc.start(memberOpts{lead: "never", cfg: member.Config{Identity: "v1"}})
	require.Equal(t, "follower", f.joined().Role)
	old.Kill()
	newer := tc.start(memberOpts{cfg: member.Config{Identity: "v2"}})
	require.Equal(t, "leader", newer.joined().Role)
	for {
		r := f.do(command{Op: "invoke", Name: "echo", Data: "x", Timeout: "30s"})
		if r.Kind == "identity" {
			require.Contains(t, r.Err, `serves Config.Identity "v2"; this member's is "v1"`)
			break
		}
		require.Equal(t, "timeout", r.Kind, r.Err) // before it tried the new Leader
	}
}

// nilErr is an error type whose Error method fails on a nil receiver, as many do.
type nilErr struct{ what string }

func (e *nilErr) Error() string { return "failed: " + e.what }

// trapService panics, or fails in ways that panic, in every Service method but Close.
type trapService struct {
	broker
	closed chan error // Close's result, for the tests that close from inside
}

func (s *trapService) Invoke(_ context.Context, method string, req cluster.Message) (cluster.Message, error) {
	switch method {
	case "typed-nil":
		var e *nilErr
		return cluster.Message{}, e // a typed nil: its Error method panics
	case "nil-file":
		return cluster.Message{Data: []byte("x"), Files: []*os.File{nil}}, nil
	}
	panic("Invoke: boom")
}

func (s *trapService) Publish(_ context.Context, topic string, _ cluster.Message) error {
	if topic == "ok" {
		return nil
	}
	panic("Publish: boom")
}

func (s *trapService) Subscribe(_ context.Context, topic string, _ func(cluster.Message)) (func(), error) {
	if topic == "bad-cancel" {
		return func() { panic("cancel: boom") }, nil
	}
	panic("Subscribe: boom")
}

func (s *trapService) Withdraw(context.Context, string, cluster.Message) error {
	panic("Withdraw: boom")
}

// Every Service method is guarded, and so is reading the error a Service returns: on the
// Leader and on a Follower alike the caller gets ErrServicePanic, and the Leader serves on.
func TestEveryServiceMethodIsGuarded(t *testing.T) {
	tc := newTestCluster(t)
	trap := func(cfg *cluster.Config) {
		cfg.NewService = func(context.Context) (cluster.Service, error) { return &trapService{}, nil }
	}
	leader := tc.join(trap)
	follower := tc.join(trap)
	ctx := context.Background()
	for _, c := range []*cluster.Client{leader, follower} {
		_, err := c.Invoke(ctx, "typed-nil", cluster.Message{})
		require.ErrorIs(t, err, cluster.ErrServicePanic)
		require.ErrorContains(t, err, `the error of Service.Invoke "typed-nil" panicked`)
		require.ErrorIs(t, c.Publish(ctx, "t", cluster.Message{}), cluster.ErrServicePanic)
		_, err = c.Subscribe(ctx, "t", func(cluster.Message) {})
		require.ErrorIs(t, err, cluster.ErrServicePanic)
		require.ErrorContains(t, err, `Service.Subscribe "t" panicked: Subscribe: boom`)
		r, err := c.Register(ctx, "workers", cluster.Message{Data: []byte("me")})
		require.ErrorIs(t, err, cluster.ErrServicePanic)
		require.Nil(t, r)
		r, err = c.Register(ctx, "ok", cluster.Message{Data: []byte("me")})
		require.NoError(t, err)
		err = r.Withdraw(ctx)
		require.ErrorIs(t, err, cluster.ErrServicePanic)
		require.ErrorContains(t, err, `Withdrawer.Withdraw "ok" panicked: Withdraw: boom`)
		// A response with a nil file fails alike in both roles, and at once.
		_, err = c.Invoke(ctx, "nil-file", cluster.Message{})
		var re *cluster.RemoteError
		require.ErrorAs(t, err, &re, "%v", err)
		require.Contains(t, re.Message, "the response's Message.Files[0] is nil")
	}
	// The cancel function's panic is recovered where the Leader calls it: on the last
	// unsubscribe.
	sub, err := follower.Subscribe(ctx, "bad-cancel", func(cluster.Message) {})
	require.NoError(t, err)
	require.NoError(t, sub.Close())
	require.Eventually(t, func() bool { return leader.Stats().Panics == 11 }, waitTimeout, time.Millisecond,
		"panics counted: %d", leader.Stats().Panics)
	out, err := follower.Invoke(ctx, "typed-nil", cluster.Message{})
	require.Error(t, err)
	require.Empty(t, out.Data)
	require.Equal(t, cluster.RoleLeader, leader.Role().Role)
}

// closingService closes a Client from Service.Close, NewService or a Withdrawer.
type closingService struct {
	broker
	target func() *cluster.Client
	done   chan error
}

func (s *closingService) Close() error {
	if c := s.target(); c != nil {
		s.done <- c.Close()
	}
	return nil
}

// Close from the Service's own Close (a Service that owns another Client) and from
// NewService returns; closing another Client from a callback waits for that Client, not
// for this one.
func TestCloseFromServiceCloseAndNewService(t *testing.T) {
	t.Run("another Client, from Service.Close", func(t *testing.T) {
		tc := newTestCluster(t)
		other := newTestCluster(t)
		b := other.join(nil)
		done := make(chan error, 1)
		a := tc.join(func(cfg *cluster.Config) {
			cfg.NewService = func(context.Context) (cluster.Service, error) {
				return &closingService{target: func() *cluster.Client { return b }, done: done}, nil
			}
		})
		require.NoError(t, a.Close())
		require.NoError(t, <-done)
		// b's Close waited for b's own handover: it is closed, not closing.
		require.Equal(t, cluster.RoleClosed, b.Role().Role)
	})
	t.Run("itself, from NewService", func(t *testing.T) {
		// NewService can reach its own Client only in a later term: B is promoted when
		// A leaves, and its NewService closes B.
		tc := newTestCluster(t)
		a := tc.join(nil)
		var b atomic.Pointer[cluster.Client]
		closed := make(chan error, 1)
		bc := tc.join(func(cfg *cluster.Config) {
			cfg.NewService = func(ctx context.Context) (cluster.Service, error) {
				if c := b.Load(); c != nil {
					closed <- c.Close()
				}
				return newBroker(ctx)
			}
		})
		b.Store(bc)
		require.Equal(t, cluster.RoleFollower, bc.Role().Role)
		require.NoError(t, a.Close())
		select {
		case err := <-closed:
			require.NoError(t, err)
		case <-time.After(waitTimeout):
			t.Fatal("Close inside NewService did not return")
		}
		require.NoError(t, bc.Close())
		require.Equal(t, cluster.RoleClosed, bc.Role().Role)
	})
}

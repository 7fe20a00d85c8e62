package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/internal/member"
	"github.com/cluster-client-go/cluster/internal/upstream"
)

// Members are this test binary re-executed with a member.Config in member.Env: TestMain
// runs the registered role its Program names instead of the tests. A full run fails if
// a role was never used.
var roles = map[string]func(member.Config, memberArgs) int{
	"member": memberMain,
	"hello":  helloMain,
	"attack": attackMain,
}

// event is one line a member writes; command one line a test writes to it.
type (
	event   = member.Event
	command = member.Command
)

// memberArgs are what the roles take besides the member.Config (its Args).
type memberArgs struct {
	// Errors "none": the member registers no Config.Errors (see testErrors).
	Errors string `json:",omitempty"`
	// NewServiceFailFile: see withFaults.
	NewServiceFailFile string `json:",omitempty"`
	// Sock is the socket the hello and attack roles dial.
	Sock   string      `json:",omitempty"`
	Attack *attackSpec `json:",omitempty"`
	NS     *nsSpec     `json:",omitempty"`
}

// attackSpec is what the attack role does (see attackMain).
type attackSpec struct {
	Mode       string
	N          int
	Body, Sent int `json:",omitempty"`
}

// nsSpec is how a member in namespaces of its own sets them up (see nsSetup).
type nsSpec struct {
	Mnt       bool   `json:",omitempty"` // a mount namespace of its own: make every mount private, then mount
	ParentMnt string `json:",omitempty"` // the test's own mount namespace, where the member refuses to mount
	Root      string `json:",omitempty"` // mount a tmpfs here, and bind Volume at Root/volume
	Volume    string `json:",omitempty"`
	Proc      bool   `json:",omitempty"` // mount a /proc of the member's pid namespace
	Host      string `json:",omitempty"` // the host name (a UTS namespace of its own)
	Net       bool   `json:",omitempty"` // bring up the loopback interface of a new network namespace
}

// memberMain is a cluster member driven over stdin/stdout (see internal/member), with
// the faults of withFaults and the errors of testErrors.
func memberMain(cfg member.Config, args memberArgs) int {
	return member.Main(cfg, testProgram(args, nil))
}

// testProgram is what the tests add to the member program; setup, if not nil, runs
// before Join.
func testProgram(args memberArgs, setup func(*member.Member) error) member.Program {
	return member.Program{
		Setup: setup,
		Configure: func(_ *member.Member, cfg *cluster.Config) {
			cfg.Errors = testErrors(args)
			cfg.NewService = withFaults(args, cfg.NewService)
		},
		Joined: func(m *member.Member) error {
			self.Store(m.Client())
			return nil
		},
		ErrKind: func(err error) string {
			if errors.Is(err, errTestNotFound) {
				return "not-found"
			}
			return ""
		},
	}
}

// helloMain dials args.Sock, sends a hello for cluster cfg.Name and prints the kind
// and, for an error frame, the code and message of the answer.
func helloMain(cfg member.Config, args memberArgs) int {
	c, err := net.Dial("unix", args.Sock)
	if err != nil {
		fmt.Println("dial-error", err)
		return 0
	}
	defer c.Close()
	h := frame.Hello{MinVersion: frame.Version, MaxVersion: frame.Version, PID: uint32(os.Getpid()), MaxBody: 1 << 20, Name: cfg.Name}
	// A refusing Leader may close before the hello is written; its answer is still there.
	_ = frame.Write(c, frame.Header{Kind: frame.KindHello}, nil, h.Append(nil))
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	f, err := frame.Read(c, frame.Limits{})
	if err != nil {
		fmt.Println("read-error", err)
		return 0
	}
	fmt.Println(f.Kind, string(f.Meta), string(f.Body))
	return 0
}

// roleConfig is cfg set to run role with args. It counts role as used.
func roleConfig(role string, cfg member.Config, args memberArgs) member.Config {
	usedMu.Lock()
	usedRoles[role] = true
	usedMu.Unlock()
	cfg.Program = role
	return cfg.WithArgs(args)
}

// roleEnviron is the environment entry that has this binary run role with cfg and
// args, for a child started without member.Start.
func roleEnviron(t testing.TB, role string, cfg member.Config, args memberArgs) string {
	t.Helper()
	env, err := roleConfig(role, cfg, args).Environ()
	require.NoError(t, err)
	return env
}

var (
	usedMu    sync.Mutex
	usedRoles = map[string]bool{}
)

func TestMain(m *testing.M) {
	if cfg, ok, err := member.FromEnv(); ok {
		var args memberArgs
		if err == nil && len(cfg.Args) > 0 {
			err = json.Unmarshal(cfg.Args, &args)
		}
		fn, found := roles[cfg.Program]
		if err != nil || !found {
			fmt.Fprintf(os.Stderr, "role %q: %v\n", cfg.Program, err)
			os.Exit(2)
		}
		os.Exit(fn(cfg, args))
	}
	// The suite is hermetic: tests that want a transport pin it (Config.Transport, or
	// t.Setenv for the tests of the variable itself), so an exported CLUSTER_TRANSPORT
	// must not override them. Members inherit the cleaned environment.
	os.Unsetenv(cluster.TransportEnv)
	flag.Parse()
	code := m.Run()
	if code == 0 && flag.Lookup("test.run").Value.String() == "" && !testing.Short() {
		for r := range roles {
			if !usedRoles[r] {
				fmt.Fprintf(os.Stderr, "FAIL: member role %q is registered but no test used it\n", r)
				code = 1
			}
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// proc is the test's handle on a member process.
type proc struct {
	*member.Proc
	t   testing.TB
	pid int
}

type memberOpts struct {
	lead        string
	heartbeat   string
	joinTimeout string
	role        string               // the registered role to run; default "member"
	bin         string               // the executable; default this test binary
	attr        *syscall.SysProcAttr // namespaces, credentials
	local       bool                 // the in-process echo Service instead of the upstream server
	// cfg holds more of the member's Config (Identity, Limits, AllowGIDs, ...); start
	// sets what the cluster and the fields above decide.
	cfg  member.Config
	args memberArgs
}

// cluster groups what members of one test share.
type testCluster struct {
	t         testing.TB
	dir       string
	name      string
	upstream  *upstream.Server
	transport string // "unix" or "tcp"
	port      int    // for tcp
}

// transports lists every transport the end-to-end tests run over.
var transports = []string{"unix", "tcp"}

// forEachTransport runs fn as a subtest per transport, each with a fresh cluster.
func forEachTransport(t *testing.T, fn func(t *testing.T, tc *testCluster)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			tc := newTestCluster(t)
			if tr == "tcp" {
				tc.transport, tc.port = "tcp", freePort(t)
			}
			fn(t, tc)
		})
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// awaitNewSubscriber waits until the upstream has one connection open, made after
// at least made-1 others (the next Leader's), subscribed to topic. A dead or departed
// Leader's connection, and its subscription, linger until the server reads its end:
// a push to it would be lost.
func (tc *testCluster) awaitNewSubscriber(t testing.TB, topic string, made int) {
	t.Helper()
	up := tc.upstream
	require.Eventually(t, func() bool {
		return up.TotalConns() >= made && up.Conns() == 1 && up.Subscribers(topic) == 1
	}, waitTimeout, time.Millisecond, "the next Leader alone subscribed to %q upstream", topic)
}

// where is how error messages name the rendezvous point.
func (tc *testCluster) where() string {
	if tc.transport == "tcp" {
		return fmt.Sprintf("127.0.0.1:%d", tc.port)
	}
	return tc.name + ".sock"
}

func (tc *testCluster) apply(cfg *cluster.Config) {
	if tc.transport == "tcp" {
		cfg.Transport, cfg.Port = cluster.TransportTCP, tc.port
	}
}

func newTestCluster(t testing.TB) *testCluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	up, err := upstream.Start("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { up.Close() })
	return &testCluster{t: t, dir: dir, name: "svc", upstream: up, transport: "unix"}
}

func (tc *testCluster) start(o memberOpts) *proc {
	t := tc.t
	t.Helper()
	role := o.role
	if role == "" {
		role = "member"
	}
	cfg := o.cfg
	cfg.Name, cfg.Dir, cfg.Log = tc.name, tc.dir, "debug"
	if !o.local {
		cfg.Upstream = tc.upstream.Addr()
	}
	if tc.transport == "tcp" {
		cfg.Transport, cfg.Port = cluster.TransportTCP, tc.port
	}
	if o.lead != "" {
		require.NoError(t, cfg.Lead.UnmarshalText([]byte(o.lead)))
	}
	var err error
	if o.heartbeat != "" {
		cfg.Heartbeat, err = time.ParseDuration(o.heartbeat)
		require.NoError(t, err)
	}
	if o.joinTimeout != "" {
		cfg.JoinTimeout, err = time.ParseDuration(o.joinTimeout)
		require.NoError(t, err)
	}
	mp, err := member.Start(member.Spec{Config: roleConfig(role, cfg, o.args), Path: o.bin, Args: []string{"-test.run=^$"}, SysProcAttr: o.attr})
	require.NoError(t, err)
	p := &proc{Proc: mp, t: t, pid: mp.PID()}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("member pid %d stderr:\n%s", p.pid, p.Stderr())
		}
	})
	return p
}

// waitTimeout is how long tests wait for an expected event. It is generous because tests
// must pass on a loaded 2-core machine; a passing run never waits this long.
const waitTimeout = 30 * time.Second

// wait returns the first event matching pred.
func (p *proc) wait(pred func(event) bool) event {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	e, err := p.Wait(ctx, pred)
	switch {
	case errors.Is(err, member.ErrExited):
		p.t.Fatalf("member %d exited while waiting; stderr:\n%s", p.pid, p.Stderr())
	case err != nil:
		var lines []string
		for _, e := range p.Events() {
			lines = append(lines, string(e.Line))
		}
		p.t.Fatalf("member %d: timed out waiting for an event; events so far:\n%s\nstderr:\n%s", p.pid, strings.Join(lines, "\n"), p.Stderr())
	}
	return e
}

// joined waits until the member joined and returns its joined event.
func (p *proc) joined() event {
	p.t.Helper()
	e := p.wait(func(e event) bool { return e.Ev == "joined" || e.Ev == "join-error" })
	require.Equal(p.t, "joined", e.Ev, "member %d did not join: %s", p.pid, e.Err)
	return e
}

// joinError waits for p's join-error and returns it.
func joinError(t testing.TB, p *proc) event {
	t.Helper()
	e := p.wait(func(e event) bool { return e.Ev == "joined" || e.Ev == "join-error" })
	require.Equal(t, "join-error", e.Ev, "member %d joined; it should have been refused", p.pid)
	t.Logf("refused as it should be: %s", e.Err)
	return e
}

// send issues a command and returns its id; result(id) waits for the answer.
func (p *proc) send(c command) int {
	p.t.Helper()
	id, err := p.Send(c)
	require.NoError(p.t, err)
	return id
}

func (p *proc) result(id int) event {
	p.t.Helper()
	return p.wait(func(e event) bool { return e.Ev == "result" && e.ID == id })
}

func (p *proc) do(c command) event {
	p.t.Helper()
	return p.result(p.send(c))
}

// role returns the member's current role as its Stats report it.
func (p *proc) role() event {
	p.t.Helper()
	return p.do(command{Op: "stats"})
}

// messages returns the data of every message delivered to subscription sub, in order.
func (p *proc) messages(sub int) []string {
	var out []string
	for _, e := range p.Events() {
		if e.Ev == "msg" && e.Sub == sub {
			out = append(out, e.Data)
		}
	}
	return out
}

// waitMessage waits until subscription sub received data.
func (p *proc) waitMessage(sub int, data string) {
	p.t.Helper()
	p.wait(func(e event) bool { return e.Ev == "msg" && e.Sub == sub && e.Data == data })
}

// exit closes stdin (the member closes its Client and exits 0) and waits.
func (p *proc) exit() {
	p.t.Helper()
	_ = p.CloseInput()
	select {
	case <-p.Done():
	case <-time.After(waitTimeout):
		p.t.Fatalf("member %d did not exit after stdin closed", p.pid)
	}
	require.Equal(p.t, 0, p.ProcessState().ExitCode(), "member %d exit code; stderr:\n%s", p.pid, p.Stderr())
}

package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/internal/upstream"
)

// Members are this test binary re-executed with CLUSTER_TEST_ROLE set: TestMain runs the
// registered role instead of the tests. A full run fails if a role was never used.
const roleEnv = "CLUSTER_TEST_ROLE"

var roles = map[string]func() int{
	"member": memberMain,
	"hello":  helloMain,
	"attack": attackMain,
}

// helloMain dials the socket in CT_SOCK, sends a hello for cluster CT_NAME and prints
// the kind and, for an error frame, the code and message of the answer.
func helloMain() int {
	c, err := net.Dial("unix", os.Getenv("CT_SOCK"))
	if err != nil {
		fmt.Println("dial-error", err)
		return 0
	}
	defer c.Close()
	h := frame.Hello{MinVersion: frame.Version, MaxVersion: frame.Version, PID: uint32(os.Getpid()), MaxBody: 1 << 20, Name: os.Getenv("CT_NAME")}
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

var (
	usedMu    sync.Mutex
	usedRoles = map[string]bool{}
)

func TestMain(m *testing.M) {
	if r := os.Getenv(roleEnv); r != "" {
		fn, ok := roles[r]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown role %q\n", r)
			os.Exit(2)
		}
		os.Exit(fn())
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

// event is one line a member writes on stdout.
type event struct {
	Ev        string `json:"ev"` // joined, join-error, role, result, msg
	ID        int    `json:"id,omitempty"`
	Role      string `json:"role,omitempty"`
	Term      uint64 `json:"term,omitempty"`
	LeaderPID int    `json:"leader_pid,omitempty"`
	PID       int    `json:"pid,omitempty"`
	Topic     string `json:"topic,omitempty"`
	Data      string `json:"data,omitempty"`
	Err       string `json:"err,omitempty"`
	Kind      string `json:"kind,omitempty"` // error class: leader-lost, timeout, remote, closed, no-leader, unauthorized, other
	Sub       int    `json:"sub,omitempty"`
	At        int64  `json:"at,omitempty"` // unix nanos
	Host      string `json:"host,omitempty"`
	// NS names the member's namespaces ("mnt" -> "4026531841"), in the "ns" event of a
	// member started in namespaces of its own.
	NS map[string]string `json:"ns,omitempty"`
}

// command is one line the test writes to a member's stdin.
type command struct {
	ID      int    `json:"id"`
	Op      string `json:"op"` // invoke, oneway, publish, subscribe, unsubscribe, register, withdraw, stats, close
	Name    string `json:"name,omitempty"`
	Data    string `json:"data,omitempty"`
	Timeout string `json:"timeout,omitempty"`
	Sub     int    `json:"sub,omitempty"`    // unsubscribe, withdraw: the id of the subscribe or register command
	Shared  bool   `json:"shared,omitempty"` // subscribe: a shared subscription
}

func errKind(err error) string {
	var re *cluster.RemoteError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, cluster.ErrLeaderLost):
		return "leader-lost"
	case errors.Is(err, cluster.ErrTimeout):
		return "timeout"
	case errors.Is(err, cluster.ErrClosed):
		return "closed"
	case errors.Is(err, cluster.ErrNoLeader):
		return "no-leader"
	case errors.Is(err, cluster.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, cluster.ErrServiceUnavailable):
		return "unavailable"
	case errors.Is(err, cluster.ErrIdentityMismatch):
		return "identity"
	case errors.Is(err, cluster.ErrServicePanic):
		return "panic"
	case errors.Is(err, errTestNotFound):
		return "not-found"
	case errors.Is(err, cluster.ErrTooLarge):
		return "too-large"
	case errors.Is(err, cluster.ErrLimit):
		return "limit"
	case errors.Is(err, cluster.ErrConfig):
		return "config"
	case errors.As(err, &re):
		return "remote"
	}
	return "other"
}

// memberMain is a cluster member driven over stdin/stdout.
func memberMain() int {
	var outMu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(e event) {
		e.At = time.Now().UnixNano()
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(e)
	}
	lead := map[string]cluster.LeadPolicy{"": cluster.LeadAuto, "never": cluster.LeadNever, "always": cluster.LeadAlways}[os.Getenv("CT_LEAD")]
	host, _ := os.Hostname()
	newService := upstream.NewService(os.Getenv("CT_UPSTREAM"))
	if os.Getenv("CT_SERVICE") == "local" {
		newService = newLocalService
	}
	cfg := cluster.Config{
		Name:       os.Getenv("CT_NAME"),
		Dir:        os.Getenv("CT_DIR"),
		Lead:       lead,
		NewService: withWhoami(withFaults(newService)),
		Identity:   os.Getenv("CT_IDENTITY"),
		Errors:     testErrors(),
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnRoleChange: func(r cluster.RoleInfo) {
			emit(event{Ev: "role", Role: r.Role.String(), Term: r.Term, LeaderPID: r.LeaderPID, PID: os.Getpid(), Host: host})
		},
	}
	for _, g := range strings.FieldsFunc(os.Getenv("CT_ALLOW_GIDS"), func(r rune) bool { return r == ',' }) {
		n, _ := strconv.ParseUint(g, 10, 32)
		cfg.AllowGIDs = append(cfg.AllowGIDs, uint32(n))
	}
	if m := os.Getenv("CT_SOCKET_MODE"); m != "" {
		n, _ := strconv.ParseUint(m, 8, 32)
		cfg.SocketMode = os.FileMode(n)
	}
	if os.Getenv("CT_TRANSPORT") == "tcp" {
		cfg.Transport = cluster.TransportTCP
		cfg.Port, _ = strconv.Atoi(os.Getenv("CT_PORT"))
	}
	if hb := os.Getenv("CT_HEARTBEAT"); hb != "" {
		cfg.Heartbeat, _ = time.ParseDuration(hb)
		cfg.HeartbeatTimeout = 3 * cfg.Heartbeat
	}
	if l := os.Getenv("CT_LIMITS"); l != "" { // a cluster.Limits as JSON; durations in ns
		if err := json.Unmarshal([]byte(l), &cfg.Limits); err != nil {
			fmt.Fprintf(os.Stderr, "CT_LIMITS: %v\n", err)
			return 2
		}
	}
	if n := os.Getenv("CT_NOFILE"); n != "" { // a lower RLIMIT_NOFILE for this member
		if err := setNoFile(n); err != nil {
			fmt.Fprintf(os.Stderr, "CT_NOFILE: %v\n", err)
			return 2
		}
	}
	joinTimeout := 30 * time.Second
	if jt := os.Getenv("CT_JOIN_TIMEOUT"); jt != "" {
		joinTimeout, _ = time.ParseDuration(jt)
	}
	ctx, cancel := context.WithTimeout(context.Background(), joinTimeout)
	c, err := cluster.Join(ctx, cfg)
	cancel()
	if err != nil {
		emit(event{Ev: "join-error", Err: err.Error(), Kind: errKind(err), PID: os.Getpid()})
		return 3
	}
	self.Store(c)
	r := c.Role()
	emit(event{Ev: "joined", Role: r.Role.String(), Term: r.Term, LeaderPID: r.LeaderPID, PID: os.Getpid(), Host: host})

	var wg sync.WaitGroup
	var subsMu sync.Mutex
	subs := map[int]*cluster.Subscription{}
	regs := map[int]*cluster.Registration{}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var cmd command
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			fmt.Fprintf(os.Stderr, "bad command %q: %v\n", sc.Text(), err)
			return 2
		}
		if cmd.Op == "close" {
			err := c.Close()
			emit(event{Ev: "result", ID: cmd.ID, Err: errString(err)})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			if cmd.Timeout != "" {
				d, _ := time.ParseDuration(cmd.Timeout)
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			res := event{Ev: "result", ID: cmd.ID}
			var err error
			switch cmd.Op {
			case "invoke":
				var out cluster.Message
				out, err = c.Invoke(ctx, cmd.Name, cluster.Message{Data: []byte(cmd.Data)})
				res.Data = string(out.Data)
				if len(out.Data) > 64<<10 { // keep the event line short
					res.Data = fmt.Sprintf("<%d bytes>", len(out.Data))
				}
			case "oneway":
				err = c.InvokeOneway(ctx, cmd.Name, cluster.Message{Data: []byte(cmd.Data)})
			case "publish":
				err = c.Publish(ctx, cmd.Name, cluster.Message{Data: []byte(cmd.Data)})
			case "subscribe":
				var opts []cluster.SubscribeOption
				if cmd.Shared {
					opts = append(opts, cluster.Shared())
				}
				var s *cluster.Subscription
				s, err = c.Subscribe(ctx, cmd.Name, func(m cluster.Message) {
					emit(event{Ev: "msg", Sub: cmd.ID, Topic: cmd.Name, Data: string(m.Data)})
				}, opts...)
				if err == nil {
					subsMu.Lock()
					subs[cmd.ID] = s
					subsMu.Unlock()
				}
			case "unsubscribe":
				subsMu.Lock()
				s := subs[cmd.Sub]
				delete(subs, cmd.Sub)
				subsMu.Unlock()
				if s != nil {
					err = s.Close()
				}
			case "register":
				var r *cluster.Registration
				r, err = c.Register(ctx, cmd.Name, cluster.Message{Data: []byte(cmd.Data)})
				if err == nil {
					subsMu.Lock()
					regs[cmd.ID] = r
					subsMu.Unlock()
				}
			case "withdraw":
				subsMu.Lock()
				r := regs[cmd.Sub]
				subsMu.Unlock()
				if r == nil {
					err = fmt.Errorf("no registration %d", cmd.Sub)
				} else {
					err = r.Withdraw(ctx)
				}
			case "stats":
				st := c.Stats()
				b, _ := json.Marshal(st)
				res.Data = string(b)
				res.Role, res.Term, res.LeaderPID = st.Role.String(), st.Term, st.LeaderPID
			default:
				err = fmt.Errorf("unknown op %q", cmd.Op)
			}
			res.Err, res.Kind = errString(err), errKind(err)
			emit(res)
		}()
	}
	wg.Wait()
	if err := c.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "close: %v\n", err)
		return 1
	}
	return 0
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// proc is the test's handle on a member process.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	in     io.WriteCloser
	stderr bytes.Buffer
	pid    int

	mu     sync.Mutex
	nextID int
	events []event
	notify chan struct{} // closed and replaced on every new event
	exited chan struct{}
}

type memberOpts struct {
	lead        string
	heartbeat   string
	joinTimeout string
	role        string               // the registered role to run; default "member"
	bin         string               // the executable; default this test binary
	env         []string             // more environment: CT_ALLOW_GIDS, CT_SOCKET_MODE, CT_SERVICE=local, ...
	attr        *syscall.SysProcAttr // namespaces, credentials
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
	role, bin := o.role, o.bin
	if role == "" {
		role = "member"
	}
	if bin == "" {
		bin = os.Args[0]
	}
	usedMu.Lock()
	usedRoles[role] = true
	usedMu.Unlock()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role, "CT_DIR="+tc.dir, "CT_NAME="+tc.name,
		"CT_UPSTREAM="+tc.upstream.Addr(), "CT_LEAD="+o.lead, "CT_HEARTBEAT="+o.heartbeat, "CT_JOIN_TIMEOUT="+o.joinTimeout,
		"CT_TRANSPORT="+tc.transport, fmt.Sprintf("CT_PORT=%d", tc.port))
	cmd.Env = append(cmd.Env, o.env...)
	cmd.SysProcAttr = o.attr
	p := &proc{t: t, cmd: cmd, notify: make(chan struct{}), exited: make(chan struct{})}
	cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	var err error
	p.in, err = cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p.pid = cmd.Process.Pid
	go func() {
		defer close(p.exited)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				continue
			}
			p.mu.Lock()
			p.events = append(p.events, e)
			close(p.notify)
			p.notify = make(chan struct{})
			p.mu.Unlock()
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("member pid %d stderr:\n%s", p.pid, p.stderr.String())
			p.mu.Unlock()
		}
	})
	return p
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// waitTimeout is how long tests wait for an expected event. It is generous because tests
// must pass on a loaded 2-core machine; a passing run never waits this long.
const waitTimeout = 30 * time.Second

// wait returns the first event (from index from on) matching pred.
func (p *proc) wait(pred func(event) bool) event {
	p.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for _, e := range p.events {
			if pred(e) {
				p.mu.Unlock()
				return e
			}
		}
		ch := p.notify
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.exited:
			p.mu.Lock()
			for _, e := range p.events {
				if pred(e) {
					p.mu.Unlock()
					return e
				}
			}
			p.mu.Unlock()
			p.t.Fatalf("member %d exited while waiting; stderr:\n%s", p.pid, p.stderrString())
		case <-deadline.C:
			p.t.Fatalf("member %d: timed out waiting for an event; events so far: %+v\nstderr:\n%s", p.pid, p.snapshot(), p.stderrString())
		}
	}
}

func (p *proc) snapshot() []event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]event(nil), p.events...)
}

func (p *proc) stderrString() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
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
	p.mu.Lock()
	p.nextID++
	c.ID = p.nextID
	p.mu.Unlock()
	b, _ := json.Marshal(c)
	_, err := p.in.Write(append(b, '\n'))
	require.NoError(p.t, err)
	return c.ID
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
	for _, e := range p.snapshot() {
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

// kill sends SIGKILL and waits for the process to be reaped.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// exit closes stdin (the member closes its Client and exits 0) and waits.
func (p *proc) exit() {
	p.t.Helper()
	_ = p.in.Close()
	select {
	case <-p.exited:
	case <-time.After(waitTimeout):
		p.t.Fatalf("member %d did not exit after stdin closed", p.pid)
	}
	require.Equal(p.t, 0, p.cmd.ProcessState.ExitCode(), "member %d exit code; stderr:\n%s", p.pid, p.stderrString())
}

// withWhoami adds the method "whoami" to a member's Service: it answers the Leader's
// host name and pid as the Leader sees them, which tells which process leads without
// trusting pids (they collide across pid namespaces).
func withWhoami(next func(context.Context) (cluster.Service, error)) func(context.Context) (cluster.Service, error) {
	return func(ctx context.Context) (cluster.Service, error) {
		svc, err := next(ctx)
		if err != nil {
			return nil, err
		}
		return whoamiService{svc}, nil
	}
}

type whoamiService struct{ cluster.Service }

func (w whoamiService) Invoke(ctx context.Context, method string, req cluster.Message) (cluster.Message, error) {
	if method == "whoami" {
		host, _ := os.Hostname()
		return cluster.Message{Data: fmt.Appendf(nil, "%s %d", host, os.Getpid())}, nil
	}
	return w.Service.Invoke(ctx, method, req)
}

// Withdraw keeps the wrapped Service's registrations semantics.
func (w whoamiService) Withdraw(ctx context.Context, topic string, msg cluster.Message) error {
	if wd, ok := w.Service.(cluster.Withdrawer); ok {
		return wd.Withdraw(ctx, topic, msg)
	}
	return nil
}

// localService is an in-process Service for members that cannot reach the upstream
// server (members in a network namespace of their own): "echo" answers the request,
// Publish delivers to its own subscribers.
type localService struct {
	mu   sync.Mutex
	next int
	subs map[string]map[int]func(cluster.Message)
}

func newLocalService(context.Context) (cluster.Service, error) {
	return &localService{subs: map[string]map[int]func(cluster.Message){}}, nil
}

func (s *localService) Invoke(_ context.Context, method string, req cluster.Message) (cluster.Message, error) {
	if method == "echo" {
		return cluster.Message{Data: bytes.Clone(req.Data)}, nil
	}
	return cluster.Message{}, fmt.Errorf("no method %q", method)
}

func (s *localService) Subscribe(_ context.Context, topic string, emit func(cluster.Message)) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	id := s.next
	if s.subs[topic] == nil {
		s.subs[topic] = map[int]func(cluster.Message){}
	}
	s.subs[topic][id] = emit
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs[topic], id)
	}, nil
}

func (s *localService) Publish(_ context.Context, topic string, msg cluster.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, emit := range s.subs[topic] {
		emit(cluster.Message{Data: bytes.Clone(msg.Data)})
	}
	return nil
}

func (s *localService) Close() error { return nil }

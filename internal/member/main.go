package member

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/cluster-client-go/cluster"
)

// Program is what a harness adds to the member program. Every field is optional.
type Program struct {
	// Setup runs first, before Join (namespaces, baselines). If it fails the member
	// writes a join-error Event (Kind "setup") and exits 4.
	Setup func(m *Member) error
	// Configure adjusts the cluster.Config just before Join (a wrapped Service, the
	// Errors registry).
	Configure func(m *Member, cfg *cluster.Config)
	// OnRoleChange is called on every role change, after the role Event is written.
	OnRoleChange func(cluster.RoleInfo)
	// Joined runs once Join succeeded, before the joined Event. If it fails the member
	// writes a join-error Event and exits 3, as when Join fails.
	Joined func(m *Member) error
	// Ops are operations besides the built-in ones (see Command); they may not
	// replace a built-in one. An Op's value becomes the result's Body, its error the
	// result's Err and Kind.
	Ops map[string]Op
	// ErrKind names the class of an error that matches none of the library's
	// sentinels ("" if it does not know it either), for Event.Kind.
	ErrKind func(error) string
	// Leave runs when stdin has ended and every Command has been answered, in place
	// of the default (close the Client; exit 1 if that fails). It returns the exit code.
	Leave func(m *Member) int
}

// Op is a Program's own operation. ctx ends at the Command's Timeout, if any.
type Op func(ctx context.Context, m *Member, cmd Command) (any, error)

// Member is the running member, as its Program sees it.
type Member struct {
	cfg  Config
	prog Program
	c    *cluster.Client

	outMu sync.Mutex
	out   *json.Encoder
}

// Args decodes the Config's Args into v.
func (m *Member) Args(v any) error {
	if len(m.cfg.Args) == 0 {
		return nil
	}
	if err := json.Unmarshal(m.cfg.Args, v); err != nil {
		return fmt.Errorf("member: Config.Args: %w", err)
	}
	return nil
}

// Client returns the member's Client; nil before Join returned.
func (m *Member) Client() *cluster.Client { return m.c }

// Emit writes v as one JSON line on stdout. Any value will do; the parent's Proc reads
// the fields of Event from it and keeps the line.
func (m *Member) Emit(v any) {
	m.outMu.Lock()
	defer m.outMu.Unlock()
	_ = m.out.Encode(v)
}

func (m *Member) emit(e Event) {
	if e.At == 0 {
		e.At = time.Now().UnixNano()
	}
	m.Emit(e)
}

func (m *Member) errKind(err error) string { return errKind(err, m.prog.ErrKind) }

// Main is the member program: it joins the cluster cfg describes, then serves
// Commands from stdin until it ends, writing Events on stdout. It returns the exit
// code: 0 after a clean Close, 1 if Close failed, 2 on a malformed Config or Command, 3
// if Join failed, 4 if Setup did.
func Main(cfg Config, prog Program) int {
	return run(cfg, prog, os.Stdin, os.Stdout)
}

func run(cfg Config, prog Program, in io.Reader, out io.Writer) int {
	m := &Member{cfg: cfg, prog: prog, out: json.NewEncoder(out)}
	for name := range prog.Ops {
		if builtin[name] {
			fmt.Fprintf(os.Stderr, "member: the Program's op %q replaces a built-in one\n", name)
			return 2
		}
	}
	if prog.Setup != nil {
		if err := prog.Setup(m); err != nil {
			m.emit(Event{Ev: EvJoinError, Err: "setup: " + err.Error(), Kind: "setup", PID: os.Getpid()})
			return 4
		}
	}
	host, _ := os.Hostname() // after Setup, which may have set it (a UTS namespace)
	if cfg.NoFile > 0 {
		if err := setNoFile(cfg.NoFile); err != nil {
			fmt.Fprintf(os.Stderr, "member: Config.NoFile: %v\n", err)
			return 2
		}
	}
	ccfg, err := cfg.Cluster()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ccfg.OnRoleChange = func(r cluster.RoleInfo) {
		m.emit(Event{Ev: EvRole, Role: r.Role.String(), Term: r.Term, LeaderPID: r.LeaderPID, PID: os.Getpid(), Host: host, At: r.At.UnixNano()})
		if prog.OnRoleChange != nil {
			prog.OnRoleChange(r)
		}
	}
	if prog.Configure != nil {
		prog.Configure(m, &ccfg)
	}
	c, err := cfg.join(ccfg)
	if err == nil {
		m.c = c
		if prog.Joined != nil {
			err = prog.Joined(m)
		}
	}
	if err != nil {
		m.emit(Event{Ev: EvJoinError, Err: err.Error(), Kind: m.errKind(err), PID: os.Getpid()})
		return 3
	}
	r := c.Role()
	m.emit(Event{Ev: EvJoined, Role: r.Role.String(), Term: r.Term, LeaderPID: r.LeaderPID, PID: os.Getpid(), Host: host})

	s := &session{m: m, subs: map[int]*cluster.Subscription{}, regs: map[int]*cluster.Registration{}}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var cmd Command
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			fmt.Fprintf(os.Stderr, "member: bad command %q: %v\n", sc.Text(), err)
			return 2
		}
		if cmd.Op == "close" {
			err := c.Close()
			m.emit(Event{Ev: EvResult, ID: cmd.ID, Op: cmd.Op, Err: errString(err), Kind: m.errKind(err)})
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			m.emit(s.do(cmd))
		}()
	}
	s.wg.Wait()
	if prog.Leave != nil {
		return prog.Leave(m)
	}
	if err := c.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "member: close: %v\n", err)
		return 1
	}
	return 0
}

var builtin = map[string]bool{
	"invoke": true, "oneway": true, "publish": true, "subscribe": true, "unsubscribe": true,
	"register": true, "withdraw": true, "stats": true, "close": true,
}

// session is the state of the Commands: subscriptions and registrations by the ID of
// the Command that made them.
type session struct {
	m  *Member
	wg sync.WaitGroup

	mu   sync.Mutex
	subs map[int]*cluster.Subscription
	regs map[int]*cluster.Registration
}

// do runs cmd and returns its result.
func (s *session) do(cmd Command) Event {
	m, c := s.m, s.m.c
	ctx := context.Background()
	if cmd.Timeout != "" {
		d, err := time.ParseDuration(cmd.Timeout)
		if err != nil {
			return Event{Ev: EvResult, ID: cmd.ID, Op: cmd.Op, Err: fmt.Sprintf("bad timeout: %v", err), Kind: "other"}
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	res := Event{Ev: EvResult, ID: cmd.ID, Op: cmd.Op}
	var err error
	switch cmd.Op {
	case "invoke":
		var out cluster.Message
		out, err = c.Invoke(ctx, cmd.Name, cluster.Message{Data: []byte(cmd.Data)})
		res.Data = string(out.Data)
		if len(out.Data) > 64<<10 { // keep the line short
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
		var sub *cluster.Subscription
		sub, err = c.Subscribe(ctx, cmd.Name, func(msg cluster.Message) {
			m.emit(Event{Ev: EvMsg, Sub: cmd.ID, Topic: cmd.Name, Data: string(msg.Data)})
		}, opts...)
		if err == nil {
			s.mu.Lock()
			s.subs[cmd.ID] = sub
			s.mu.Unlock()
		}
	case "unsubscribe":
		s.mu.Lock()
		sub := s.subs[cmd.Sub]
		delete(s.subs, cmd.Sub)
		s.mu.Unlock()
		if sub != nil {
			err = sub.Close()
		}
	case "register":
		var r *cluster.Registration
		r, err = c.Register(ctx, cmd.Name, cluster.Message{Data: []byte(cmd.Data)})
		if err == nil {
			s.mu.Lock()
			s.regs[cmd.ID] = r
			s.mu.Unlock()
		}
	case "withdraw":
		s.mu.Lock()
		r := s.regs[cmd.Sub]
		s.mu.Unlock()
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
		op, ok := m.prog.Ops[cmd.Op]
		if !ok {
			err = fmt.Errorf("unknown op %q", cmd.Op)
			break
		}
		var v any
		if v, err = op(ctx, m, cmd); err == nil && v != nil {
			if res.Body, err = json.Marshal(v); err != nil {
				err = fmt.Errorf("encoding the answer of %s: %w", cmd.Op, err)
			}
		}
	}
	res.Err, res.Kind = errString(err), m.errKind(err)
	return res
}

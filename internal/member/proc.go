package member

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
)

// ErrExited is returned by Proc's waits when the member exited without writing the
// Event waited for.
var ErrExited = errors.New("member: the process exited")

// ErrJoin is returned by Proc.Joined when the member wrote a join-error Event.
var ErrJoin = errors.New("member: the member did not join")

// Spec says how to start a member process.
type Spec struct {
	// Config is the member's Config, passed to it in Env.
	Config Config
	// Path is the executable. Default os.Args[0]: this binary, re-executed.
	Path string
	// Args are its arguments. A test binary needs "-test.run=^$", so that it runs no
	// test when its TestMain does not notice Env.
	Args []string
	// SysProcAttr sets credentials or namespaces.
	SysProcAttr *syscall.SysProcAttr
	// Stderr receives the member's stderr. Nil: Proc keeps the last StderrTail bytes
	// of it (Proc.Stderr).
	Stderr io.Writer
	// StderrTail is how much of the member's stderr Proc keeps when Stderr is nil.
	// Default 1 MiB.
	StderrTail int
	// OnEvent, if set, is called with every Event, in order, once Proc recorded it,
	// from the goroutine that reads them: it must not block.
	OnEvent func(Event)
}

// Proc is the parent's handle on a member process: the Events it wrote, its stdin
// for Commands, signals, its exit.
type Proc struct {
	cmd    *exec.Cmd
	pid    int
	stderr *tail
	done   chan struct{} // closed once the process exited and its output was read

	inMu sync.Mutex // orders writes to in and the IDs they carry
	in   io.WriteCloser
	id   int

	mu     sync.Mutex
	events []Event
	notify chan struct{} // closed and replaced on every new Event
}

// Start starts a member as s says. The caller must end it (Kill, or CloseInput and
// wait for Done).
func Start(s Spec) (*Proc, error) {
	env, err := s.Config.Environ()
	if err != nil {
		return nil, err
	}
	path := s.Path
	if path == "" {
		path = os.Args[0]
	}
	cmd := exec.Command(path, s.Args...)
	cmd.Env = append(os.Environ(), env)
	cmd.SysProcAttr = s.SysProcAttr
	p := &Proc{cmd: cmd, done: make(chan struct{}), notify: make(chan struct{})}
	cmd.Stderr = s.Stderr
	if s.Stderr == nil {
		p.stderr = &tail{max: s.StderrTail}
		if p.stderr.max <= 0 {
			p.stderr.max = 1 << 20
		}
		cmd.Stderr = p.stderr
	}
	if p.in, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("member: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("member: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("member: starting %s: %w", path, err)
	}
	p.pid = cmd.Process.Pid
	go p.read(out, s.OnEvent)
	return p, nil
}

func (p *Proc) read(out io.Reader, onEvent func(Event)) {
	defer close(p.done)
	r := bufio.NewReaderSize(out, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if line = bytes.TrimSuffix(line, []byte("\n")); len(line) > 0 {
			var e Event
			if json.Unmarshal(line, &e) != nil {
				e = Event{Ev: EvUnreadable, Data: string(line)}
			}
			e.Line = line
			p.mu.Lock()
			p.events = append(p.events, e)
			close(p.notify)
			p.notify = make(chan struct{})
			p.mu.Unlock()
			if onEvent != nil {
				onEvent(e)
			}
		}
		if err != nil {
			break
		}
	}
	_ = p.cmd.Wait()
}

// PID is the member's process id.
func (p *Proc) PID() int { return p.pid }

// Send writes c to the member's stdin and returns its ID, which it assigns unless c
// has one.
func (p *Proc) Send(c Command) (int, error) {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	if c.ID == 0 {
		p.id++
		c.ID = p.id
	}
	b, err := json.Marshal(c)
	if err != nil {
		return 0, fmt.Errorf("member: encoding %s: %w", c.Op, err)
	}
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		return 0, fmt.Errorf("member %d: sending %s: %w", p.pid, c.Op, err)
	}
	return c.ID, nil
}

// Do sends c and waits for its result.
func (p *Proc) Do(ctx context.Context, c Command) (Event, error) {
	id, err := p.Send(c)
	if err != nil {
		return Event{}, err
	}
	return p.Result(ctx, id)
}

// Result waits for the result of Command id.
func (p *Proc) Result(ctx context.Context, id int) (Event, error) {
	return p.Wait(ctx, func(e Event) bool { return e.Ev == EvResult && e.ID == id })
}

// Joined waits until the member joined, and returns its joined Event; or its
// join-error Event and an error matching ErrJoin.
func (p *Proc) Joined(ctx context.Context) (Event, error) {
	e, err := p.Wait(ctx, func(e Event) bool { return e.Ev == EvJoined || e.Ev == EvJoinError })
	if err == nil && e.Ev == EvJoinError {
		err = fmt.Errorf("%w: %s (%s)", ErrJoin, e.Err, e.Kind)
	}
	return e, err
}

// Wait returns the first Event the member wrote, since it started, that satisfies
// pred. It waits for one until ctx ends (ctx's error) or the member exits (ErrExited).
func (p *Proc) Wait(ctx context.Context, pred func(Event) bool) (Event, error) {
	seen := 0
	for {
		p.mu.Lock()
		events, ch := p.events, p.notify
		p.mu.Unlock()
		for ; seen < len(events); seen++ {
			if pred(events[seen]) {
				return events[seen], nil
			}
		}
		select {
		case <-ch:
		case <-p.done:
			p.mu.Lock()
			events = p.events
			p.mu.Unlock()
			for ; seen < len(events); seen++ {
				if pred(events[seen]) {
					return events[seen], nil
				}
			}
			return Event{}, fmt.Errorf("member %d (%v): %w", p.pid, p.cmd.ProcessState, ErrExited)
		case <-ctx.Done():
			return Event{}, fmt.Errorf("member %d: %w", p.pid, context.Cause(ctx))
		}
	}
}

// Events returns every Event the member wrote so far.
func (p *Proc) Events() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

// Stderr returns what Proc kept of the member's stderr (see Spec.Stderr).
func (p *Proc) Stderr() string {
	if p.stderr == nil {
		return ""
	}
	return p.stderr.String()
}

// Signal sends sig to the member.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill kills the member (SIGKILL) and waits until it is reaped and its output read.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// CloseInput closes the member's stdin: it answers the Commands still running,
// closes its Client and exits.
func (p *Proc) CloseInput() error {
	p.inMu.Lock()
	defer p.inMu.Unlock()
	return p.in.Close()
}

// Done is closed once the member exited and everything it wrote was read.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ProcessState is the member's exit status once Done is closed; nil before.
func (p *Proc) ProcessState() *os.ProcessState {
	select {
	case <-p.done:
		return p.cmd.ProcessState
	default:
		return nil
	}
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

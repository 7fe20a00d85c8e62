package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster/internal/member"
)

// The orchestrator (run) drives every other process of a measurement as an agent: a
// child process that reads one JSON request per line on stdin and answers each with one
// JSON line on stdout. Go agents are this binary re-executed (see main); the Node.js
// agent is node running member.js, which speaks the same protocol. A Go cluster member
// is an internal/member program instead, whose operations are the requests, each
// answered with a response as the result's Body (see startMember).

// request is one command to an agent. Which fields matter depends on Op.
type request struct {
	Op       string `json:"op"`
	N        int    `json:"n,omitempty"`
	Size     int    `json:"size,omitempty"`
	Conc     int    `json:"conc,omitempty"`
	Ms       int    `json:"ms,omitempty"`
	Topic    string `json:"topic,omitempty"`
	Interval int    `json:"intervalUs,omitempty"` // between publishes; 0 = as fast as possible
	OldPID   int    `json:"oldpid,omitempty"`
	Mode     string `json:"mode,omitempty"`
}

// response is an agent's answer. Err is set when the command failed.
type response struct {
	Err    string  `json:"err,omitempty"`
	Ready  bool    `json:"ready,omitempty"`
	PID    int     `json:"pid,omitempty"`
	Leader bool    `json:"leader,omitempty"`
	Lat    []int64 `json:"lat,omitempty"`   // nanoseconds
	Calls  int64   `json:"calls,omitempty"` // completed calls or received messages
	Ns     int64   `json:"ns,omitempty"`    // elapsed nanoseconds
	T      int64   `json:"t,omitempty"`     // a CLOCK_MONOTONIC time, nanoseconds
	First  int64   `json:"first,omitempty"` // CLOCK_MONOTONIC of the first message received
	Last   int64   `json:"last,omitempty"`  // ... and of the last
	Heap   int64   `json:"heap,omitempty"`  // bytes
}

// mono is CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the
// host (Node's process.hrtime.bigint() reads it too), so one process can stamp a
// message and another measure its delivery.
func mono() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// serveAgent writes the ready line, then answers requests on stdin with handle until
// stdin ends.
func serveAgent(handle func(request) response) {
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	enc := json.NewEncoder(out)
	_ = enc.Encode(response{Ready: true, PID: os.Getpid()})
	_ = out.Flush()
	in := bufio.NewReader(os.Stdin)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return
		}
		var req request
		if err := json.Unmarshal(line, &req); err != nil {
			_ = enc.Encode(response{Err: "bad request: " + err.Error()})
		} else {
			_ = enc.Encode(handle(req))
		}
		_ = out.Flush()
	}
}

// agent is the orchestrator's handle on one agent process.
type agent struct {
	name  string
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan []byte
	pid   int
	wait  sync.Once

	// A Go cluster member instead: its Proc, and the IDs of the requests sent and
	// not yet answered, in order.
	member  *member.Proc
	pending []int
}

// startMember starts a Go cluster member, the binary self re-executed with cfg, and
// waits (up to timeout) until it joined.
func startMember(name, self string, cfg member.Config, logw io.Writer, timeout time.Duration) (*agent, error) {
	p, err := member.Start(member.Spec{Config: cfg, Path: self, Args: []string{"agent", "member"}, Stderr: logw})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	a := &agent{name: name, member: p, pid: p.PID()}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := p.Joined(ctx); err != nil {
		a.kill()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return a, nil
}

// startAgent starts cmd as an agent and waits (up to timeout) for its ready line.
func startAgent(name string, cmd *exec.Cmd, logw io.Writer, timeout time.Duration) (*agent, response, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, response{}, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, response{}, err
	}
	cmd.Stderr = logw
	if err := cmd.Start(); err != nil {
		return nil, response{}, fmt.Errorf("%s: %w", name, err)
	}
	a := &agent{name: name, cmd: cmd, in: in, lines: make(chan []byte, 4), pid: cmd.Process.Pid}
	go func() {
		defer close(a.lines)
		r := bufio.NewReaderSize(out, 1<<20)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				a.lines <- line
			}
			if err != nil {
				return
			}
		}
	}()
	r, err := a.recv(timeout)
	if err != nil {
		a.kill()
		return nil, r, err
	}
	if !r.Ready {
		a.kill()
		return nil, r, fmt.Errorf("%s: first line is not ready: %+v", name, r)
	}
	return a, r, nil
}

func (a *agent) send(req request) error {
	b, _ := json.Marshal(req)
	if a.member != nil {
		id, err := a.member.Send(member.Command{Op: req.Op, Args: b})
		if err != nil {
			return fmt.Errorf("%s: %w", a.name, err)
		}
		a.pending = append(a.pending, id)
		return nil
	}
	_, err := a.in.Write(append(b, '\n'))
	if err != nil {
		return fmt.Errorf("%s: %w", a.name, err)
	}
	return nil
}

func (a *agent) recv(timeout time.Duration) (response, error) {
	if a.member != nil {
		return a.recvMember(timeout)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-a.lines:
		if !ok {
			return response{}, fmt.Errorf("%s (pid %d) exited", a.name, a.pid)
		}
		var r response
		if err := json.Unmarshal(line, &r); err != nil {
			return response{}, fmt.Errorf("%s: bad answer %q: %w", a.name, line, err)
		}
		if r.Err != "" {
			return r, fmt.Errorf("%s: %s", a.name, r.Err)
		}
		return r, nil
	case <-t.C:
		return response{}, fmt.Errorf("%s (pid %d): no answer within %v", a.name, a.pid, timeout)
	}
}

func (a *agent) recvMember(timeout time.Duration) (response, error) {
	if len(a.pending) == 0 {
		return response{}, fmt.Errorf("%s: no request to answer", a.name)
	}
	id := a.pending[0]
	a.pending = a.pending[1:]
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	e, err := a.member.Result(ctx, id)
	if err != nil {
		return response{}, fmt.Errorf("%s: %w", a.name, err)
	}
	var r response
	if e.Err != "" {
		r.Err = e.Err
	} else if err := json.Unmarshal(e.Body, &r); err != nil {
		return response{}, fmt.Errorf("%s: bad answer %q: %w", a.name, e.Body, err)
	}
	if r.Err != "" {
		return r, fmt.Errorf("%s: %s", a.name, r.Err)
	}
	return r, nil
}

// do sends req and waits for the answer.
func (a *agent) do(req request, timeout time.Duration) (response, error) {
	if err := a.send(req); err != nil {
		return response{}, err
	}
	return a.recv(timeout)
}

// signalKill sends the agent SIGKILL; reap waits for it.
func (a *agent) signalKill() error {
	if a.member != nil {
		return a.member.Signal(syscall.SIGKILL)
	}
	return a.cmd.Process.Signal(syscall.SIGKILL)
}

// kill SIGKILLs the agent and reaps it.
func (a *agent) kill() {
	_ = a.signalKill()
	a.reap()
}

// stop closes its stdin (an agent exits at the end of its input), and kills it if it
// has not exited within a second.
func (a *agent) stop() {
	if a.member != nil {
		_ = a.member.CloseInput()
	} else {
		_ = a.in.Close()
	}
	done := make(chan struct{})
	go func() { a.reap(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		a.kill()
		<-done
	}
}

func (a *agent) reap() {
	if a.member != nil {
		<-a.member.Done()
		return
	}
	a.wait.Do(func() { _ = a.cmd.Wait() })
}

// doAll sends req to every agent, then collects the answers in order.
func doAll(as []*agent, req request, timeout time.Duration) ([]response, error) {
	for _, a := range as {
		if err := a.send(req); err != nil {
			return nil, err
		}
	}
	out := make([]response, len(as))
	var first error
	for i, a := range as {
		r, err := a.recv(timeout)
		if err != nil && first == nil {
			first = err
		}
		out[i] = r
	}
	return out, first
}

// sequential is the "seq" op of every driver: req.N round trips of call, one at a time,
// stopping early at req.Ms; it returns their latencies.
func sequential(req request, call func() error) response {
	lat := make([]int64, 0, req.N)
	end := deadline(req.Ms)
	for range req.N {
		t0 := mono()
		if err := call(); err != nil {
			return response{Err: err.Error()}
		}
		lat = append(lat, mono()-t0)
		if time.Now().After(end) {
			break
		}
	}
	return response{Lat: lat}
}

// concurrent is the "tput" op of the drivers that make calls: req.Conc callers, each
// with a call of its own from newCall, calling for req.Ms; it returns the calls made
// and the time taken.
func concurrent(req request, newCall func() func() error) response {
	var calls atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	t0 := mono()
	end := time.Now().Add(time.Duration(req.Ms) * time.Millisecond)
	for range req.Conc {
		call := newCall()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				if n%16 == 0 && time.Now().After(end) {
					return
				}
				if err := call(); err != nil {
					failed.Store(err.Error())
					return
				}
				calls.Add(1)
			}
		}()
	}
	wg.Wait()
	if e, ok := failed.Load().(string); ok {
		return response{Err: e}
	}
	return response{Calls: calls.Load(), Ns: mono() - t0}
}

// heap is memory an agent keeps resident for the whole run (-heap): an application's
// heap, as far as the kernel is concerned when the process is killed.
var heap []byte

// holdHeap allocates mib MiB and touches every page of it.
func holdHeap(mib int) {
	heap = make([]byte, mib<<20)
	for i := 0; i < len(heap); i += 4096 {
		heap[i] = 1
	}
}

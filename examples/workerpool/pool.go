// pool.go is the demo's scaffolding too: it starts the worker processes, reads the JSON
// lines they log and keeps what the coordinator learns from them.

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"time"
)

// logLine is a line a worker logs (the fields the demo reads).
type logLine struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
	PID  int       `json:"pid"`
	Role string    `json:"role"`
	Term uint64    `json:"term"`
	N    string    `json:"n"`
	Data string    `json:"data"`
	Err  string    `json:"err"`
}

// pool is the worker processes.
type pool struct {
	procs []*proc
	lines chan logLine  // every worker's log lines
	quit  chan struct{} // closed by stop: the readers stop sending lines
}

// proc is one worker process.
type proc struct {
	id   int
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its output is read
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// startPool starts n workers of the program worker, each with args.
func startPool(worker string, n int, args ...string) (*pool, error) {
	p := &pool{lines: make(chan logLine, 4096), quit: make(chan struct{})}
	for i := 1; i <= n; i++ {
		cmd := exec.Command(worker, args...)
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = workerProcAttr() // a worker outliving the coordinator gets SIGTERM
		out, err := cmd.StdoutPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			p.stop()
			return nil, fmt.Errorf("starting worker %d: %w", i, err)
		}
		w := &proc{id: i, cmd: cmd, done: make(chan struct{})}
		p.procs = append(p.procs, w)
		go p.read(w, out)
	}
	return p, nil
}

// read sends w's log lines to p.lines until w's output ends, then waits for w.
func (p *pool) read(w *proc, out io.Reader) {
	defer close(w.done)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		select {
		case p.lines <- l:
		case <-p.quit:
		}
	}
	_, _ = io.Copy(io.Discard, out)
	_ = w.cmd.Wait()
}

// stop kills the workers still running and waits for them.
func (p *pool) stop() {
	close(p.quit)
	for _, w := range p.procs {
		_ = w.cmd.Process.Kill()
		<-w.done
	}
}

func (p *pool) byPID(pid int) *proc {
	for _, w := range p.procs {
		if w.pid() == pid {
			return w
		}
	}
	return nil
}

func (p *pool) except(not *proc) []*proc {
	return slices.DeleteFunc(slices.Clone(p.procs), func(w *proc) bool { return w == not })
}

// state is what the coordinator learned from the workers' log lines, by pid.
type state struct {
	role    map[int]string // latest role
	term    map[int]uint64
	roleAt  map[int]time.Time
	invoked map[int]time.Time // the last successful invoke
	got     map[int]map[string]bool
	closed  map[int]bool
	incr    int // the highest incr counter seen
}

func newState() *state {
	return &state{role: map[int]string{}, term: map[int]uint64{}, roleAt: map[int]time.Time{},
		invoked: map[int]time.Time{}, got: map[int]map[string]bool{}, closed: map[int]bool{}}
}

func (s *state) apply(l logLine) {
	switch l.Msg {
	case "role":
		s.role[l.PID], s.term[l.PID], s.roleAt[l.PID] = l.Role, l.Term, l.Time
	case "incr":
		s.invoked[l.PID] = l.Time
		if n, err := strconv.Atoi(l.N); err == nil {
			s.incr = max(s.incr, n)
		}
	case "config":
		if s.got[l.PID] == nil {
			s.got[l.PID] = map[string]bool{}
		}
		s.got[l.PID][l.Data] = true
	case "closed":
		s.closed[l.PID] = true
	}
}

func (s *state) allInvoked(n int) bool { return len(s.invoked) == n && s.leader() != 0 }

func (s *state) leader() int { return s.newLeader(0) }

// newLeader is a leading worker other than old, or 0.
func (s *state) newLeader(old int) int {
	for pid, r := range s.role {
		if r == "leader" && pid != old {
			return pid
		}
	}
	return 0
}

func (s *state) allGot(v string, except map[int]bool) bool {
	for pid := range s.role {
		if !except[pid] && !s.got[pid][v] {
			return false
		}
	}
	return len(s.role) > 0
}

func (s *state) allInvokedSince(t time.Time, except map[int]bool, n int) bool {
	count := 0
	for pid, at := range s.invoked {
		if except[pid] {
			continue
		}
		if !at.After(t) {
			return false
		}
		count++
	}
	return count == n-len(except)
}

func (s *state) allClosed(except map[int]bool) bool {
	for pid := range s.role {
		if !except[pid] && !s.closed[pid] {
			return false
		}
	}
	return true
}

func (s *state) printRoles() {
	pids := make([]int, 0, len(s.role))
	for pid := range s.role {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, pid := range pids {
		fmt.Printf("  pid %-7d %-8s term %d\n", pid, s.role[pid], s.term[pid])
	}
}

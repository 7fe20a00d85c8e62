// Command workerpool demonstrates cluster: a pool of worker processes on one host shares
// ONE connection to an upstream server.
//
//	go run ./examples/workerpool
//
// It starts a small upstream server in-process, spawns worker processes (this program,
// re-executed) that each Join the same cluster, invoke the upstream and subscribe to a
// topic, and shows that the upstream saw one connection. Then it kills the Leader with
// SIGKILL and shows the failover: the new Leader, how long it took, and subscriptions
// still delivering. It exits 0 on success and non-zero with a reason otherwise.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/internal/upstream"
)

// report is one line a worker prints for the coordinator.
type report struct {
	Worker  int    `json:"worker"`
	PID     int    `json:"pid"`
	Event   string `json:"event"` // role, invoked, message, error
	Role    string `json:"role,omitempty"`
	Term    uint64 `json:"term,omitempty"`
	Data    string `json:"data,omitempty"`
	AtNanos int64  `json:"at"`
}

func main() {
	workers := flag.Int("workers", 4, "number of worker processes")
	timeout := flag.Duration("timeout", 15*time.Second, "give up after this long")
	flag.Parse()
	if os.Getenv("WORKERPOOL_WORKER") != "" {
		os.Exit(worker())
	}
	if err := coordinate(*workers, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("OK")
}

// worker is one process of the pool: Join, subscribe, invoke, report.
func worker() int {
	id := os.Getenv("WORKERPOOL_WORKER")
	out := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	emit := func(r report) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Sscan(id, &r.Worker)
		r.PID, r.AtNanos = os.Getpid(), time.Now().UnixNano()
		_ = out.Encode(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cluster.Join(ctx, cluster.Config{
		Name:       "workerpool",
		Dir:        os.Getenv("WORKERPOOL_DIR"),
		NewService: upstream.NewService(os.Getenv("WORKERPOOL_UPSTREAM")),
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnRoleChange: func(r cluster.RoleInfo) {
			emit(report{Event: "role", Role: r.Role.String(), Term: r.Term})
		},
	})
	if err != nil {
		emit(report{Event: "error", Data: err.Error()})
		return 1
	}
	defer c.Close()
	if _, err := c.Subscribe(ctx, "config", func(m cluster.Message) {
		emit(report{Event: "message", Data: string(m.Data)})
	}); err != nil {
		emit(report{Event: "error", Data: err.Error()})
		return 1
	}
	// Invoke the upstream through whoever leads, until the coordinator closes stdin.
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-done:
			return 0
		case <-tick.C:
		}
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		out, err := c.Invoke(cctx, "incr", cluster.Message{})
		ccancel()
		switch {
		case err == nil:
			emit(report{Event: "invoked", Data: string(out.Data), Role: c.Role().Role.String()})
		case errors.Is(err, cluster.ErrLeaderLost), errors.Is(err, cluster.ErrTimeout):
			// The Leader died mid-call: at-most-once, so we are told rather than retried.
		case errors.Is(err, cluster.ErrClosed):
			return 0
		default:
			emit(report{Event: "error", Data: err.Error()})
		}
	}
}

type workerProc struct {
	id  int
	cmd *exec.Cmd
	in  io.WriteCloser
}

// coordinate runs the demo.
func coordinate(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	up, err := upstream.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer up.Close()
	dir, err := os.MkdirTemp("", "wp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Printf("upstream server on %s; cluster dir %s\n", up.Addr(), dir)

	reports := make(chan report, 4096)
	var procs []*workerProc
	var readers sync.WaitGroup
	defer func() {
		for _, p := range procs {
			_ = p.in.Close()
		}
		for _, p := range procs {
			_ = p.cmd.Wait()
		}
		readers.Wait()
	}()
	for i := 1; i <= n; i++ {
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), fmt.Sprintf("WORKERPOOL_WORKER=%d", i), "WORKERPOOL_DIR="+dir, "WORKERPOOL_UPSTREAM="+up.Addr())
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, &workerProc{id: i, cmd: cmd, in: in})
		readers.Add(1)
		go func() {
			defer readers.Done()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var r report
				if json.Unmarshal(sc.Bytes(), &r) == nil {
					reports <- r
				}
			}
		}()
	}

	st := newState()
	// wait consumes reports until cond holds or the deadline passes.
	wait := func(what string, cond func() bool) error {
		for !cond() {
			select {
			case r := <-reports:
				if r.Event == "error" {
					return fmt.Errorf("worker %d (pid %d): %s", r.Worker, r.PID, r.Data)
				}
				st.apply(r)
			case <-time.After(time.Until(deadline)):
				return fmt.Errorf("timed out waiting for %s", what)
			}
		}
		return nil
	}

	if err := wait("every worker to join and invoke", func() bool { return st.allInvoked(n) }); err != nil {
		return err
	}
	leaderPID := st.leader()
	fmt.Printf("\n%d workers joined; roles:\n", n)
	st.printRoles()
	fmt.Printf("every worker invoked the upstream (incr counter now %s)\n", st.lastIncr)
	fmt.Printf("upstream connections: now %d, most at once %d, total %d  <- one shared connection\n", up.Conns(), up.MaxConns(), up.TotalConns())
	if up.MaxConns() != 1 {
		return fmt.Errorf("the upstream saw %d connections at once, want 1", up.MaxConns())
	}

	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := up.WaitSubscribers(ctx, "config", 1); err != nil {
		return err
	}
	fmt.Printf("upstream subscriptions to \"config\": %d (for %d subscribers)\n", up.Subscribers("config"), n)
	up.Push("config", []byte("v1"))
	if err := wait("every worker to receive config v1", func() bool { return st.allGot("v1", nil) }); err != nil {
		return err
	}
	fmt.Println("pushed config v1: every worker received it")

	// Kill the Leader.
	var victim *workerProc
	for _, p := range procs {
		if p.cmd.Process.Pid == leaderPID {
			victim = p
		}
	}
	if victim == nil {
		return errors.New("no leader found among the workers")
	}
	fmt.Printf("\nSIGKILL the leader, worker %d (pid %d)...\n", victim.id, leaderPID)
	killedAt := time.Now()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	dead := map[int]bool{leaderPID: true}
	if err := wait("a new leader", func() bool { return st.newLeader(leaderPID) != 0 }); err != nil {
		return err
	}
	newPID := st.newLeader(leaderPID)
	took := time.Unix(0, st.roleAt[newPID]).Sub(killedAt)
	fmt.Printf("new leader: pid %d, term %d, %v after the kill\n", newPID, st.term[newPID], took.Round(10*time.Microsecond))
	if err := up.WaitSubscribers(ctx, "config", 1); err != nil {
		return err
	}
	up.Push("config", []byte("v2"))
	if err := wait("every survivor to receive config v2", func() bool { return st.allGot("v2", dead) }); err != nil {
		return err
	}
	fmt.Println("pushed config v2: every surviving worker received it (subscriptions re-established)")
	if err := wait("every survivor to invoke through the new leader", func() bool { return st.allInvokedSince(killedAt, dead, n) }); err != nil {
		return err
	}
	fmt.Printf("every survivor invoked through the new leader (incr counter now %s)\n", st.lastIncr)
	// The dead Leader's upstream connection is gone; the new one is the only one.
	for up.Conns() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("upstream connections: now %d, most at once %d, total %d (one per leadership term)\n", up.Conns(), up.MaxConns(), up.TotalConns())
	if up.Conns() != 1 {
		return fmt.Errorf("after failover the upstream has %d connections, want 1", up.Conns())
	}
	fmt.Println()
	return nil
}

// state is what the coordinator learned from the workers' reports.
type state struct {
	role     map[int]string // pid -> latest role
	term     map[int]uint64
	roleAt   map[int]int64
	invoked  map[int]int64 // pid -> time of last successful invoke
	got      map[int]map[string]bool
	lastIncr string
}

func newState() *state {
	return &state{role: map[int]string{}, term: map[int]uint64{}, roleAt: map[int]int64{}, invoked: map[int]int64{}, got: map[int]map[string]bool{}}
}

func (s *state) apply(r report) {
	switch r.Event {
	case "role":
		s.role[r.PID], s.term[r.PID], s.roleAt[r.PID] = r.Role, r.Term, r.AtNanos
	case "invoked":
		s.invoked[r.PID] = r.AtNanos
		s.lastIncr = r.Data
	case "message":
		if s.got[r.PID] == nil {
			s.got[r.PID] = map[string]bool{}
		}
		s.got[r.PID][r.Data] = true
	}
}

func (s *state) allInvoked(n int) bool { return len(s.invoked) == n && s.leader() != 0 }

func (s *state) leader() int {
	for pid, r := range s.role {
		if r == "leader" {
			return pid
		}
	}
	return 0
}

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
		if at <= t.UnixNano() {
			return false
		}
		count++
	}
	return count == n-len(except)
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

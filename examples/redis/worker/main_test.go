package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/examples/redis/internal/redistest"
)

// Worker processes are this test binary re-executed with workerEnv set (to "worker"
// for the real program's run, or to a benchmark mode, see bench_test.go).
const workerEnv = "SHAREDREDIS_WORKER"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(workerEnv); mode {
	case "":
		redistest.VerifyTestMain(m)
	case "worker":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	default:
		os.Exit(benchWorker(mode, os.Args[1:]))
	}
}

// waitTimeout bounds every "eventually": generous, for a loaded 2-core machine
// running 16 race-enabled processes. Nothing here is a timed assertion.
const waitTimeout = 60 * time.Second

// TestSharedConnections: 2 workers and 16 workers alike, Redis sees only the Leader's
// two connections (commands, pub/sub) with one subscription each for the topic and
// the pattern; every worker's INCRs count; a message PUBLISHed by redis-cli reaches
// one Redis connection and every worker.
func TestSharedConnections(t *testing.T) {
	counts := map[int]int{}
	for _, n := range []int{2, 16} {
		t.Run(fmt.Sprintf("%dworkers", n), func(t *testing.T) {
			const incrs = 25
			srv := redistest.Start(t)
			p := startPool(t, srv, n, "-sub", "news,psub:alerts.*", "-incr", "hits", "-n", strconv.Itoa(incrs))
			p.wait("every worker ready", func() bool { return len(p.ready) == n })
			leader := p.leader()
			conns := waitLeaderConns(t, srv, leader)
			counts[n] = len(conns)
			t.Logf("%d workers: Redis sees %d connections, all the Leader's (pid %d)", n, len(conns), leader)

			require.Equal(t, strconv.Itoa(n*incrs), cli(t, srv, "GET", "hits"), "every INCR of every worker counted once")

			require.Equal(t, "1", cli(t, srv, "PUBLISH", "news", "hello"), "one Redis subscriber for the whole pool")
			require.Equal(t, "1", cli(t, srv, "PUBLISH", "alerts.fire", "fire"))
			p.wait("every worker to get both messages", func() bool {
				return p.allGot(nil, "news", "hello") && p.allGot(nil, "psub:alerts.*", "fire")
			})
			// Each worker INCRs seen:<payload> before it reports the message.
			require.Equal(t, strconv.Itoa(n), cli(t, srv, "GET", "seen:hello"))
			require.Equal(t, strconv.Itoa(n), cli(t, srv, "GET", "seen:fire"))
			p.stop()
		})
	}
	if len(counts) == 2 {
		require.Equal(t, counts[2], counts[16], "the same connections for 16 workers as for 2")
	}
}

// TestFailover: SIGKILL the Leader; a survivor leads, subscribes again on Redis, and
// Redis sees only its connections (the dead Leader's are gone); later messages reach
// every survivor, whose INCRs go through the new Leader.
func TestFailover(t *testing.T) {
	const n = 4
	srv := redistest.Start(t)
	p := startPool(t, srv, n, "-sub", "news,psub:alerts.*", "-incr", "hits", "-n", "10")
	p.wait("every worker ready", func() bool { return len(p.ready) == n })
	old := p.leader()
	waitLeaderConns(t, srv, old)
	require.Equal(t, strconv.Itoa(n*10), cli(t, srv, "GET", "hits"))
	require.Equal(t, "1", cli(t, srv, "PUBLISH", "news", "before"))
	p.wait("every worker to get the first message", func() bool { return p.allGot(nil, "news", "before") })

	oldTerm := p.role(old).Term
	require.NoError(t, syscall.Kill(old, syscall.SIGKILL))
	p.waitExit(old)
	dead := map[int]bool{old: true}
	p.wait("a new leader", func() bool {
		pid := p.leaderLocked()
		return pid != 0 && pid != old && p.roles[pid].Term > oldTerm
	})
	leader := p.leader()
	t.Logf("killed the Leader, pid %d (term %d); new Leader pid %d (term %d)", old, oldTerm, leader, p.role(leader).Term)

	// The new Leader's two connections, with both subscriptions, and nothing of the
	// old Leader's.
	conns := waitLeaderConns(t, srv, leader)
	require.Len(t, conns, 2)

	// Every survivor re-subscribes with the new Leader on its own schedule: publish
	// probes until each has received one on both topics.
	deadline := time.Now().Add(waitTimeout)
	for i := 0; ; i++ {
		cli(t, srv, "PUBLISH", "news", fmt.Sprintf("probe-%d", i))
		cli(t, srv, "PUBLISH", "alerts.probe", fmt.Sprintf("aprobe-%d", i))
		ok := p.poll(100*time.Millisecond, func() bool {
			return p.allGotPrefix(dead, "news", "probe-") && p.allGotPrefix(dead, "psub:alerts.*", "aprobe-")
		})
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, not every survivor receives messages again:\n%s", waitTimeout, p.dump())
		}
	}

	require.Equal(t, "1", cli(t, srv, "PUBLISH", "news", "after"), "one Redis subscriber again")
	require.Equal(t, "1", cli(t, srv, "PUBLISH", "alerts.smoke", "smoke"))
	p.wait("every survivor to get the later messages", func() bool {
		return p.allGot(dead, "news", "after") && p.allGot(dead, "psub:alerts.*", "smoke")
	})
	require.Equal(t, strconv.Itoa(n-1), cli(t, srv, "GET", "seen:after"), "each survivor INCRed through the new Leader once")
	require.Equal(t, strconv.Itoa(n-1), cli(t, srv, "GET", "seen:smoke"))
	require.Len(t, waitLeaderConns(t, srv, leader), 2)
	p.stop()
}

// leaderName is the client name sharedredis gives the connections of a Leader.
func leaderName(pid int) string { return fmt.Sprintf("cluster-leader-%d", pid) }

// waitLeaderConns waits until Redis's connections are exactly those of the Leader
// pid: one command connection and one pub/sub connection with one channel and one
// pattern subscribed, and nothing else (no other process's, no old Leader's).
func waitLeaderConns(t *testing.T, srv *redistest.Server, pid int) []redistest.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var last []redistest.Client
	for {
		clients, err := srv.Clients(ctx)
		require.NoError(t, err)
		last = clients
		sub, psub, ok := 0, 0, len(clients) == 2
		for _, c := range clients {
			ok = ok && c.Name == leaderName(pid)
			sub += c.Sub
			psub += c.PSub
		}
		if ok && sub == 1 && psub == 1 {
			return clients
		}
		select {
		case <-ctx.Done():
			var b strings.Builder
			for _, c := range last {
				fmt.Fprintf(&b, "  id=%s name=%s addr=%s sub=%d psub=%d cmd=%s\n", c.ID, c.Name, c.Addr, c.Sub, c.PSub, c.Cmd)
			}
			t.Fatalf("after %v Redis does not see exactly the Leader's (pid %d) two connections:\n%s", waitTimeout, pid, b.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func cli(t *testing.T, srv *redistest.Server, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	out, err := srv.CLI(ctx, args...)
	require.NoError(t, err)
	return out
}

// proc is one worker process.
type proc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's result
}

// pool is a set of worker processes and what they reported.
type pool struct {
	t     *testing.T
	procs map[int]*proc
	wg    sync.WaitGroup // output readers and waiters

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every event
	roles   map[int]event
	ready   map[int]bool
	got     map[int][]event // messages
	errs    []event
}

// startPool starts n workers of one cluster (a fresh Dir) on srv, with extra flags.
func startPool(t *testing.T, srv *redistest.Server, n int, flags ...string) *pool {
	t.Helper()
	dir, err := os.MkdirTemp("", "") // short: socket paths must fit sun_path
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	self, err := os.Executable()
	require.NoError(t, err)
	p := &pool{
		t:       t,
		procs:   map[int]*proc{},
		changed: make(chan struct{}),
		roles:   map[int]event{},
		ready:   map[int]bool{},
		got:     map[int][]event{},
	}
	t.Cleanup(p.kill)
	args := append([]string{"-redis", srv.Addr, "-dir", dir, "-name", "redis"}, flags...)
	for range n {
		cmd := exec.Command(self, args...)
		cmd.Env = append(os.Environ(), workerEnv+"=worker")
		pr := &proc{cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan struct{})}
		cmd.Stderr = pr.stderr
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		p.mu.Lock()
		p.procs[cmd.Process.Pid] = pr
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var e event
				if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
					e = event{Event: "error", PID: cmd.Process.Pid, Err: fmt.Sprintf("bad output line %q", sc.Text())}
				}
				p.apply(e)
			}
			pr.err = cmd.Wait()
			close(pr.exited)
			p.apply(event{Event: "exit", PID: cmd.Process.Pid})
		}()
	}
	return p
}

func (p *pool) apply(e event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch e.Event {
	case "role":
		p.roles[e.PID] = e
	case "ready":
		p.ready[e.PID] = true
	case "message":
		p.got[e.PID] = append(p.got[e.PID], e)
		if e.Err != "" {
			p.errs = append(p.errs, e)
		}
	case "error":
		p.errs = append(p.errs, e)
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// poll waits up to d for cond, evaluated with p.mu held; it fails the test at once if
// a worker reported an error.
func (p *pool) poll(d time.Duration, cond func() bool) bool {
	p.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		p.mu.Lock()
		errs, ok, changed := p.errs, cond(), p.changed
		p.mu.Unlock()
		if len(errs) > 0 {
			p.t.Fatalf("a worker failed: %+v\n%s", errs, p.dump())
		}
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		}
	}
}

// wait waits up to waitTimeout for cond (see poll), and fails the test otherwise.
func (p *pool) wait(what string, cond func() bool) {
	p.t.Helper()
	if !p.poll(waitTimeout, cond) {
		p.t.Fatalf("after %v, still waiting for %s\n%s", waitTimeout, what, p.dump())
	}
}

// leaderLocked is the live worker whose latest role is leader with the highest term,
// or 0. p.mu must be held.
func (p *pool) leaderLocked() int {
	best := 0
	for pid, r := range p.roles {
		if r.Role != "leader" || p.exitedLocked(pid) {
			continue
		}
		if best == 0 || r.Term > p.roles[best].Term {
			best = pid
		}
	}
	return best
}

func (p *pool) exitedLocked(pid int) bool {
	select {
	case <-p.procs[pid].exited:
		return true
	default:
		return false
	}
}

// role is pid's latest role event.
func (p *pool) role(pid int) event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.roles[pid]
}

// leader returns the live Leader, which must exist.
func (p *pool) leader() int {
	p.t.Helper()
	var pid int
	p.wait("a leader", func() bool { pid = p.leaderLocked(); return pid != 0 })
	return pid
}

// allGot says every live worker not in except got data on topic. p.mu must be held.
func (p *pool) allGot(except map[int]bool, topic, data string) bool {
	return p.all(except, func(e event) bool { return e.Topic == topic && e.Data == data })
}

// allGotPrefix is allGot for any data starting with prefix.
func (p *pool) allGotPrefix(except map[int]bool, topic, prefix string) bool {
	return p.all(except, func(e event) bool { return e.Topic == topic && strings.HasPrefix(e.Data, prefix) })
}

func (p *pool) all(except map[int]bool, match func(event) bool) bool {
	for pid := range p.procs {
		if except[pid] {
			continue
		}
		found := false
		for _, e := range p.got[pid] {
			if match(e) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (p *pool) waitExit(pid int) {
	p.t.Helper()
	select {
	case <-p.procs[pid].exited:
	case <-time.After(waitTimeout):
		p.t.Fatalf("pid %d did not exit", pid)
	}
}

// stop ends every live worker with SIGTERM and requires a clean exit.
func (p *pool) stop() {
	p.t.Helper()
	for _, pr := range p.procs {
		select {
		case <-pr.exited:
		default:
			_ = pr.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for pid, pr := range p.procs {
		p.waitExit(pid)
		if pr.cmd.ProcessState.Success() {
			continue
		}
		if ws, ok := pr.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			continue // killed by the test
		}
		p.t.Errorf("worker %d: %v\n%s", pid, pr.err, pr.stderr.String())
	}
}

// kill is the Cleanup: it SIGKILLs whatever still runs and waits for the readers.
func (p *pool) kill() {
	for _, pr := range p.procs {
		select {
		case <-pr.exited:
		default:
			_ = pr.cmd.Process.Kill()
		}
	}
	p.wg.Wait()
}

// dump describes every worker, for failure messages.
func (p *pool) dump() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for pid, pr := range p.procs {
		fmt.Fprintf(&b, "worker pid %d: role %+v ready %v exited %v\n  messages: %+v\n", pid, p.roles[pid], p.ready[pid], p.exitedLocked(pid), p.got[pid])
		if s := pr.stderr.String(); s != "" {
			fmt.Fprintf(&b, "  stderr: %s\n", s)
		}
	}
	return b.String()
}

// lockedBuffer collects a process's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

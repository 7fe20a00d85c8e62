package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis measurement: a pool of worker processes running INCR against one private
// redis-server, each worker with a go-redis client of its own ("own") or through this
// library with examples/redis/sharedredis as the Service ("shared"), in interleaved
// rounds. See README.md.

// redisRow is one mode of one pool size and in-flight count, over every round.
type redisRow struct {
	Mode        string  `json:"mode"` // own or shared
	Workers     int     `json:"workers"`
	InFlight    int     `json:"in_flight_per_worker"`
	Calls       int64   `json:"calls"`
	PerSec      float64 `json:"incr_per_s"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	Conns       int     `json:"redis_connections"`
	RedisCPUms  float64 `json:"redis_cpu_ms_per_1000"`
	PoolCPUms   float64 `json:"pool_cpu_ms_per_1000"`
	CtxSwitches float64 `json:"pool_context_switches_per_call"`
	Load        string  `json:"loadavg"`
	// Shared rows: the ratio to the own row of the same pool and in-flight count.
	XOwnPerSec float64 `json:"incr_per_s_x_own,omitempty"`
	XOwnP50    float64 `json:"p50_x_own,omitempty"`
	XOwnConns  float64 `json:"connections_x_own,omitempty"`
	XOwnCPU    float64 `json:"redis_cpu_x_own,omitempty"`
}

// redisPool is the worker processes of one mode.
type redisPool struct {
	mode    string
	workers []*agent
	leader  *agent // shared: the worker that leads
}

// connections counts the lines of a CLIENT LIST reply that are the pool's: the
// connections whose name ends with the pid of one of its workers (own workers name
// theirs "bench-own-<pid>", sharedredis "cluster-leader-<pid>").
func (p *redisPool) connections(list string) int {
	pids := map[string]bool{}
	for _, a := range p.workers {
		pids[strconv.Itoa(a.pid)] = true
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		for _, f := range strings.Fields(line) {
			if name, ok := strings.CutPrefix(f, "name="); ok {
				if i := strings.LastIndexByte(name, '-'); i >= 0 && pids[name[i+1:]] {
					n++
				}
			}
		}
	}
	return n
}

func (p *redisPool) stop() {
	var wg sync.WaitGroup
	for _, a := range p.workers {
		wg.Go(a.stop)
	}
	wg.Wait()
}

// wantsGroups says whether the run measures anything besides Redis, which needs none
// of the systems startAll starts.
func (b *bench) wantsGroups() bool {
	if b.opt.only == nil {
		return true
	}
	for k := range b.opt.only {
		if k != "redis" && k != "scale" { // they start their own
			return true
		}
	}
	return false
}

func (b *bench) measureRedis() error {
	srv, err := startRedis()
	if err != nil {
		if errors.Is(err, errNoRedis) && os.Getenv("SHAREDREDIS_REQUIRE_REDIS") == "" {
			b.res.note("Redis INCR: skipped: %v", err)
			b.logf("Redis INCR skipped: %v", err)
			return nil
		}
		return err
	}
	defer srv.stop()
	b.res.RedisServer = strings.TrimSpace(redisVersion())
	admin := redis.NewClient(&redis.Options{Addr: srv.addr, PoolSize: 1, ClientName: "bench-admin"})
	defer admin.Close()
	for _, w := range b.opt.redisWorkers {
		if err := b.redisPools(srv, admin, w); err != nil {
			return fmt.Errorf("%d workers: %w", w, err)
		}
	}
	return nil
}

// redisPools starts w own and w shared workers and measures them in turn.
func (b *bench) redisPools(srv *redisServer, admin *redis.Client, w int) error {
	dir, err := os.MkdirTemp(b.dir, "redis")
	if err != nil {
		return err
	}
	own := &redisPool{mode: "own"}
	shared := &redisPool{mode: "shared"}
	defer own.stop()
	defer shared.stop()
	start := func(p *redisPool, i int) (*agent, error) {
		return b.startAgent(fmt.Sprintf("redis %s worker %d/%d", p.mode, i, w),
			b.agentCmd("redis-worker", "-mode", p.mode, "-addr", srv.addr, "-dir", dir))
	}
	// The shared pool's first worker leads; the others join it, all at once.
	first, err := start(shared, 0)
	if err != nil {
		return err
	}
	shared.workers, shared.leader = []*agent{first}, first
	for _, p := range []*redisPool{shared, own} {
		n := len(p.workers)
		as := make([]*agent, w-n)
		errs := make([]error, w-n)
		var wg sync.WaitGroup
		for i := range as {
			wg.Go(func() { as[i], errs[i] = start(p, n+i) })
		}
		wg.Wait()
		for i, a := range as {
			if a != nil {
				p.workers = append(p.workers, a)
			} else if err == nil {
				err = errs[i]
			}
		}
		if err != nil {
			return err
		}
	}
	if r, err := first.do(request{Op: "role"}, 10*time.Second); err != nil || !r.Leader {
		return fmt.Errorf("the first shared worker does not lead (%v)", err)
	}
	ms := b.opt.redisMs
	load := loadavg()
	for _, inflight := range []int{1, 16} {
		// An untimed round first: own opens the connections this many calls in flight
		// need (and keeps them: the rounds with one call in flight come first, so that
		// their count is theirs).
		for _, p := range []*redisPool{own, shared} {
			if _, err := b.redisRound(p, admin, inflight, min(ms, 200)); err != nil {
				return err
			}
		}
		acc := map[string]*redisAcc{"own": {}, "shared": {}}
		for round := range b.opt.rounds {
			order := []*redisPool{own, shared}
			if round%2 == 1 {
				order = []*redisPool{shared, own}
			}
			for _, p := range order {
				r, err := b.redisRound(p, admin, inflight, ms)
				if err != nil {
					return err
				}
				acc[p.mode].add(r)
			}
		}
		o := acc["own"].row("own", w, inflight, load)
		s := acc["shared"].row("shared", w, inflight, load)
		s.XOwnPerSec, s.XOwnP50 = ratio(s.PerSec, o.PerSec), ratio(s.P50us, o.P50us)
		s.XOwnConns, s.XOwnCPU = ratio(float64(s.Conns), float64(o.Conns)), ratio(s.RedisCPUms, o.RedisCPUms)
		b.res.Redis = append(b.res.Redis, o, s)
	}
	if b.opt.redisProfile != "" && w == b.opt.redisWorkers[0] {
		return b.redisProfile(shared, admin, srv.cmd.Process.Pid, filepath.Join(b.opt.redisProfile, fmt.Sprintf("w%d", w)))
	}
	return nil
}

// redisRound is one round of one pool: what the workers did, and what Redis and the
// workers' processes spent on it.
type redisRound struct {
	calls, ns int64
	lat       []int64
	redisCPU  float64 // seconds
	poolTicks int64
	switches  int64
	conns     int
}

func (b *bench) redisRound(p *redisPool, admin *redis.Client, inflight, ms int) (redisRound, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var r redisRound
	cpu0, err := redisCPU(ctx, admin)
	if err != nil {
		return r, err
	}
	ticks0, sw0 := poolUsage(p.workers)
	rs, err := doAll(p.workers, request{Op: "incr", Conc: inflight, Ms: ms}, 2*time.Minute)
	if err != nil {
		return r, err
	}
	ticks1, sw1 := poolUsage(p.workers)
	cpu1, err := redisCPU(ctx, admin)
	if err != nil {
		return r, err
	}
	for _, x := range rs {
		r.calls += x.Calls
		r.ns = max(r.ns, x.Ns)
		r.lat = append(r.lat, x.Lat...)
	}
	r.redisCPU, r.poolTicks, r.switches = cpu1-cpu0, ticks1-ticks0, sw1-sw0
	// Counted with every worker still connected, after the load: a pool that opened
	// connections under load still has them.
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		return r, err
	}
	r.conns = p.connections(list)
	return r, nil
}

type redisAcc struct {
	calls, ns int64
	lat       []int64
	redisCPU  float64
	ticks     int64
	switches  int64
	conns     int
}

func (a *redisAcc) add(r redisRound) {
	a.calls += r.calls
	a.ns += r.ns
	a.lat = append(a.lat, r.lat...)
	a.redisCPU += r.redisCPU
	a.ticks += r.poolTicks
	a.switches += r.switches
	a.conns = max(a.conns, r.conns)
}

func (a *redisAcc) row(mode string, workers, inflight int, load string) redisRow {
	slices.Sort(a.lat)
	per1k := func(seconds float64) float64 { return ratio(seconds*1e3*1e3, float64(a.calls)) }
	return redisRow{
		Mode: mode, Workers: workers, InFlight: inflight, Calls: a.calls,
		PerSec: ratio(float64(a.calls), float64(a.ns)/1e9),
		P50us:  us(pct(a.lat, .5)), P99us: us(pct(a.lat, .99)),
		Conns:       a.conns,
		RedisCPUms:  per1k(a.redisCPU),
		PoolCPUms:   per1k(float64(a.ticks) / clockTicks),
		CtxSwitches: ratio(float64(a.switches), float64(a.calls)),
		Load:        load,
	}
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's utime and stime (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// redisCPU is used_cpu_sys + used_cpu_user of INFO cpu, in seconds.
func redisCPU(ctx context.Context, admin *redis.Client) (float64, error) {
	info, err := admin.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("INFO cpu: %s: %w", line, err)
			}
			sum += f
		}
	}
	return sum, nil
}

// poolUsage is the CPU time (in clock ticks) and the context switches (voluntary and
// not, of every thread) of the agents' processes so far.
func poolUsage(as []*agent) (ticks, switches int64) {
	for _, a := range as {
		t, s := procUsage(a.pid)
		ticks += t
		switches += s
	}
	return ticks, switches
}

func procUsage(pid int) (ticks, switches int64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// The fields after the command name, which is in parentheses and may hold spaces:
		// utime and stime are fields 14 and 15 of the line, 12 and 13 of these.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 13 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				s, _ := strconv.ParseInt(f[12], 10, 64)
				ticks = u + s
			}
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				switches += n
			}
		}
	}
	return ticks, switches
}

func redisVersion() string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// redisProfile measures more shared rounds of one caller per worker, to dir: a CPU
// profile of the Leader and of a Follower (leader.cpu.pprof, follower.cpu.pprof), an
// execution trace of each (leader.trace, follower.trace), and the syscalls and
// context switches of the Leader, a Follower and redis-server counted by perf stat
// (perf-*.txt) when perf is installed; calls.txt has each round's calls, the
// denominator of per-call figures.
func (b *bench) redisProfile(p *redisPool, admin *redis.Client, redisPID int, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var follower *agent
	for _, a := range p.workers {
		if a != p.leader {
			follower = a
			break
		}
	}
	if follower == nil {
		return fmt.Errorf("redis profile: the shared pool has no Follower")
	}
	ms := b.opt.redisMs
	var calls strings.Builder
	for _, mode := range []string{"cpu", "trace"} {
		for _, who := range []struct {
			name string
			a    *agent
		}{{"leader", p.leader}, {"follower", follower}} {
			path, err := filepath.Abs(filepath.Join(dir, who.name+"."+mode))
			if err != nil {
				return err
			}
			if mode == "cpu" {
				path += ".pprof"
			}
			if _, err := who.a.do(request{Op: "prof", Mode: mode, Topic: path}, 10*time.Second); err != nil {
				return err
			}
		}
		d := ms
		if mode == "trace" {
			d = min(ms, 500) // a trace grows by megabytes a second
		}
		r, err := b.redisRound(p, admin, 1, d)
		if err != nil {
			return err
		}
		fmt.Fprintf(&calls, "%s round: %d calls in %d ms by %d workers\n", mode, r.calls, d, len(p.workers))
		for _, a := range []*agent{p.leader, follower} {
			if _, err := a.do(request{Op: "prof", Mode: "stop"}, time.Minute); err != nil {
				return err
			}
		}
	}
	if _, err := exec.LookPath("perf"); err == nil {
		r, err := b.perfRound(p, admin, dir, map[string]int{"leader": p.leader.pid, "follower": follower.pid, "redis": redisPID})
		if err != nil {
			return err
		}
		fmt.Fprintf(&calls, "perf round: %d calls in %d ms by %d workers\n", r.calls, ms, len(p.workers))
	} else {
		b.res.note("Redis profile: perf is not installed: no syscall counts")
	}
	b.res.note("Redis profile of %d shared workers x 1 in flight: %s", len(p.workers), dir)
	return os.WriteFile(filepath.Join(dir, "calls.txt"), []byte(calls.String()), 0o644)
}

// perfRound is one round of p with perf stat counting the syscalls, context switches
// and CPU time of each process in pids, into dir/perf-<name>.txt.
func (b *bench) perfRound(p *redisPool, admin *redis.Client, dir string, pids map[string]int) (redisRound, error) {
	var perfs []*exec.Cmd
	stop := func() {
		for _, cmd := range perfs {
			_ = cmd.Process.Signal(syscall.SIGINT)
			_ = cmd.Wait()
		}
	}
	for name, pid := range pids {
		cmd := exec.Command("perf", "stat", "-e", "raw_syscalls:sys_enter,context-switches,cpu-clock",
			"-p", strconv.Itoa(pid), "-o", filepath.Join(dir, "perf-"+name+".txt"))
		cmd.Stdout, cmd.Stderr = io.Discard, b.logw
		if err := cmd.Start(); err != nil {
			stop()
			return redisRound{}, err
		}
		perfs = append(perfs, cmd)
	}
	time.Sleep(200 * time.Millisecond) // perf attaches
	r, err := b.redisRound(p, admin, 1, b.opt.redisMs)
	stop()
	return r, err
}

// printRedis writes the Redis table.
func (r *results) printRedis(w io.Writer) {
	if len(r.Redis) == 0 {
		return
	}
	fmt.Fprintf(w, "\nRedis INCR: workers x calls in flight each\tINCR/s\tp50\tp99\tconns\tredis CPU/1k\tpool CPU/1k\tctx sw/call\tx own (INCR/s, p50, conns, redis CPU)\n")
	for _, row := range r.Redis {
		vs := ""
		if row.Mode == "shared" {
			vs = fmt.Sprintf("%.2f, %.2f, %.2f, %.2f", row.XOwnPerSec, row.XOwnP50, row.XOwnConns, row.XOwnCPU)
		}
		fmt.Fprintf(w, "  %2d x %-2d %s\t%.0f\t%.0f us\t%.0f us\t%d\t%.1f ms\t%.1f ms\t%.1f\t%s\n", row.Workers, row.InFlight, row.Mode,
			row.PerSec, row.P50us, row.P99us, row.Conns, row.RedisCPUms, row.PoolCPUms, row.CtxSwitches, vs)
	}
	fmt.Fprintf(w, "  load average at the start of each pool: %s\n", redisLoads(r.Redis))
}

func redisLoads(rows []redisRow) string {
	var out []string
	for i, row := range rows {
		if i == 0 || rows[i-1].Workers != row.Workers {
			out = append(out, fmt.Sprintf("%d workers %s", row.Workers, row.Load))
		}
	}
	return strings.Join(out, "; ")
}

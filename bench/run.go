package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type options struct {
	smoke     bool
	rounds    int
	seqN      int
	seqMs     int
	tputMs    int
	conc      int
	pubPaced  int
	pubBurst  int
	kills     int
	blobMiB   []int
	farm      int
	heapMiB   int
	node      string
	tcp       bool
	out       string
	chart     string
	agentWait time.Duration
	// The Redis measurement (redis.go).
	redisWorkers []int
	redisMs      int
	redisProfile string
	only         map[string]bool // nil: everything
}

// group is one system under test: its processes and how to start another member.
type group struct {
	name      string // e.g. "cluster/unix"
	kind      string // cluster, floor, grpc, node
	transport string
	server    *agent   // floor and grpc: the server
	members   []*agent // cluster and node: every member; floor and grpc: the clients
	start     func() (*agent, error)
}

// followers are the members that do not lead (the clients, for floor and grpc).
func (g *group) followers() ([]*agent, *agent, error) {
	if g.kind == "floor" || g.kind == "grpc" {
		return g.members, g.server, nil
	}
	var fs []*agent
	var leader *agent
	for _, a := range g.members {
		r, err := a.do(request{Op: "role"}, 10*time.Second)
		if err != nil {
			return nil, nil, err
		}
		if r.Leader {
			leader = a
		} else {
			fs = append(fs, a)
		}
	}
	if leader == nil {
		return nil, nil, fmt.Errorf("%s: no member leads", g.name)
	}
	return fs, leader, nil
}

func (g *group) stop() {
	for _, a := range g.members {
		a.stop()
	}
	if g.server != nil {
		g.server.stop()
	}
}

type bench struct {
	opt    options
	self   string
	dir    string
	logw   io.Writer
	res    *results
	groups map[string]*group
	order  []string
	node   *nodePeer
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	var o options
	fs.BoolVar(&o.smoke, "smoke", false, "run every measurement once with tiny counts (CI); writes no chart unless -chart is given")
	fs.IntVar(&o.rounds, "rounds", 3, "interleaved rounds of the latency and throughput measurements")
	fs.IntVar(&o.seqN, "seq", 30000, "sequential invokes per system, over all rounds")
	fs.IntVar(&o.tputMs, "tput-ms", 2000, "duration of one throughput round, milliseconds")
	fs.IntVar(&o.conc, "conc", 64, "concurrent callers per Follower in the throughput measurement")
	fs.IntVar(&o.kills, "kills", 20, "SIGKILLs of the Leader per system")
	fs.IntVar(&o.farm, "idle", 100, "idle Followers joined to measure what one costs the Leader")
	fs.IntVar(&o.heapMiB, "heap", 0, "MiB every cluster member and the flock holder keep resident, standing in for an application's heap (failover after SIGKILL grows with the dead Leader's memory)")
	fs.StringVar(&o.node, "node", "auto", "the Node.js cluster-client peer: auto (when node and npm are installed), on, off")
	fs.BoolVar(&o.tcp, "tcp", true, "also measure the TCP transport")
	fs.StringVar(&o.out, "out", "results", "directory for the JSON results and the agents' log")
	fs.StringVar(&o.chart, "chart", "", `chart path (SVG); default "latest.svg", or results/smoke.svg with -smoke, results/partial.svg with -only`)
	blobs := fs.String("blob", "1,16,64", "payload sizes for blob vs inline, MiB (empty: skip)")
	only := fs.String("only", "", "run only these measurements (comma-separated: seq,tput,pub,failover,blob,idle,redis)")
	redisWorkers := fs.String("redis-workers", "4,16,64", "worker processes of the Redis measurement, one pool size after another")
	fs.IntVar(&o.redisMs, "redis-ms", 1000, "duration of one round of the Redis measurement, milliseconds")
	fs.StringVar(&o.redisProfile, "redis-profile", "", "after the Redis measurement of the first pool size, profile the shared pool into this directory (CPU profiles, execution traces, perf stat counts)")
	_ = fs.Parse(args)
	o.seqMs, o.pubPaced, o.pubBurst, o.agentWait = 8000, 2000, 20000, 20*time.Second
	if o.smoke { // tiny counts, except where a flag says otherwise
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		smoke := func(name string, p *int, v int) {
			if !set[name] {
				*p = v
			}
		}
		smoke("rounds", &o.rounds, 1)
		smoke("seq", &o.seqN, 50)
		smoke("tput-ms", &o.tputMs, 200)
		smoke("kills", &o.kills, 1)
		smoke("redis-ms", &o.redisMs, 100)
		if !set["redis-workers"] {
			*redisWorkers = "4"
		}
		smoke("idle", &o.farm, 4)
		o.seqMs, o.pubPaced, o.pubBurst = 2000, 50, 200
		if !set["blob"] {
			*blobs = "1"
		}
	}
	if o.chart == "" {
		o.chart = "latest.svg" // the README shows it
		switch {
		case o.smoke:
			o.chart = filepath.Join(o.out, "smoke.svg")
		case *only != "":
			o.chart = filepath.Join(o.out, "partial.svg") // latest.svg keeps the last full run
		}
	}
	for _, f := range strings.Split(*blobs, ",") {
		if f = strings.TrimSpace(f); f != "" {
			var n int
			if _, err := fmt.Sscan(f, &n); err != nil || n <= 0 {
				fmt.Fprintf(os.Stderr, "bench: -blob: bad size %q\n", f)
				return 2
			}
			o.blobMiB = append(o.blobMiB, n)
		}
	}
	for _, f := range strings.Split(*redisWorkers, ",") {
		if f = strings.TrimSpace(f); f != "" {
			var n int
			if _, err := fmt.Sscan(f, &n); err != nil || n < 2 {
				fmt.Fprintf(os.Stderr, "bench: -redis-workers: bad count %q (at least 2: a Leader and a Follower)\n", f)
				return 2
			}
			o.redisWorkers = append(o.redisWorkers, n)
		}
	}
	if *only != "" {
		o.only = map[string]bool{}
		for _, m := range strings.Split(*only, ",") {
			o.only[strings.TrimSpace(m)] = true
		}
	}
	b := &bench{opt: o, groups: map[string]*group{}}
	if err := b.main(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		return 1
	}
	return 0
}

func (b *bench) main() error {
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if err := os.MkdirAll(b.opt.out, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(b.opt.out, "agents.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer lf.Close()
	b.logw = lf
	if b.dir, err = os.MkdirTemp("", "ccb"); err != nil { // short: socket paths
		return err
	}
	defer os.RemoveAll(b.dir)
	b.res = newResults(b.opt, os.Args)
	started := time.Now()
	defer func() {
		for _, name := range b.order {
			b.groups[name].stop()
		}
		if b.node != nil {
			b.node.remove()
		}
	}()

	if b.wantsGroups() {
		if err := b.startAll(); err != nil {
			return err
		}
	}
	steps := []struct {
		key, name string
		fn        func() error
	}{
		{"seq", "sequential invoke", b.measureSeq},
		{"tput", "throughput", b.measureTput},
		{"pub", "publish fan-out", b.measurePub},
		{"failover", "failover", b.measureFailover},
		{"blob", "blob vs inline", b.measureBlob},
		{"idle", "idle follower", b.measureIdle},
		{"redis", "Redis INCR, own vs shared", b.measureRedis},
	}
	for _, s := range steps {
		if b.opt.only != nil && !b.opt.only[s.key] {
			continue
		}
		b.logf("measuring %s", s.name)
		if err := s.fn(); err != nil {
			return fmt.Errorf("%s: %w (agents' stderr: %s)", s.name, err, logPath)
		}
	}
	b.res.finish(started)
	b.res.print(os.Stdout)
	stamp := started.UTC().Format("20060102-150405")
	jsonPath := filepath.Join(b.opt.out, "bench-"+stamp+".json")
	if b.opt.smoke {
		jsonPath = filepath.Join(b.opt.out, "smoke.json")
	}
	if err := b.res.writeJSON(jsonPath); err != nil {
		return err
	}
	fmt.Printf("\nJSON: %s\n", jsonPath)
	if b.opt.chart != "" {
		drawn, err := writeChart(b.res, b.opt.chart)
		if err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		if drawn {
			fmt.Printf("chart: %s\n", b.opt.chart)
		}
	}
	return nil
}

func (b *bench) agentCmd(kind string, args ...string) *exec.Cmd {
	return exec.Command(b.self, append([]string{"agent", kind}, args...)...)
}

func (b *bench) startAgent(name string, cmd *exec.Cmd) (*agent, error) {
	a, _, err := startAgent(name, cmd, b.logw, b.opt.agentWait)
	return a, err
}

func (b *bench) add(g *group) {
	b.groups[g.name] = g
	b.order = append(b.order, g.name)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startAll starts every system: 1 Leader + 3 Followers (or 1 server + 3 clients).
func (b *bench) startAll() error {
	transports := []string{"unix"}
	if b.opt.tcp {
		transports = append(transports, "tcp")
	}
	for _, tr := range transports {
		// The floor: raw sockets.
		addr := filepath.Join(b.dir, "floor.sock")
		if tr == "tcp" {
			port, err := freePort()
			if err != nil {
				return err
			}
			addr = fmt.Sprintf("127.0.0.1:%d", port)
		}
		g := &group{name: "floor/" + tr, kind: "floor", transport: tr}
		var err error
		if g.server, err = b.startAgent(g.name+" server", b.agentCmd("floor-server", "-net", tr, "-addr", addr)); err != nil {
			return err
		}
		b.add(g)
		for i := range 3 {
			a, err := b.startAgent(fmt.Sprintf("%s client %d", g.name, i), b.agentCmd("floor-client", "-net", tr, "-addr", addr))
			if err != nil {
				return err
			}
			g.members = append(g.members, a)
		}
		// cluster itself.
		dir, err := os.MkdirTemp(b.dir, tr)
		if err != nil {
			return err
		}
		port := 0
		if tr == "tcp" {
			if port, err = freePort(); err != nil {
				return err
			}
		}
		cg := &group{name: "cluster/" + tr, kind: "cluster", transport: tr}
		n := 0
		cg.start = func() (*agent, error) {
			n++
			return startMember(fmt.Sprintf("%s member %d", cg.name, n), b.self, memberConfig(dir, tr, port, b.opt.heapMiB), b.logw, b.opt.agentWait)
		}
		if err := b.startMembers(cg); err != nil {
			return err
		}
	}
	// gRPC over a Unix socket.
	path := filepath.Join(b.dir, "grpc.sock")
	g := &group{name: "grpc/unix", kind: "grpc", transport: "unix"}
	var err error
	if g.server, err = b.startAgent("grpc server", b.agentCmd("grpc-server", "-path", path)); err != nil {
		return err
	}
	b.add(g)
	for i := range 3 {
		a, err := b.startAgent(fmt.Sprintf("grpc client %d", i), b.agentCmd("grpc-client", "-path", path))
		if err != nil {
			return err
		}
		g.members = append(g.members, a)
	}
	if b.opt.heapMiB > 0 {
		b.res.note("every cluster member and the flock holder keep %d MiB resident (-heap); cluster-client's members do not", b.opt.heapMiB)
	}
	// The Node.js cluster-client.
	if b.opt.node != "off" {
		np, err := installNode(b.logf)
		if err != nil {
			if b.opt.node == "on" {
				return fmt.Errorf("the Node.js peer: %w", err)
			}
			b.res.note("Node.js cluster-client: skipped: %v", err)
			b.logf("Node.js cluster-client skipped: %v", err)
		} else {
			b.node = np
			b.res.Machine.NodePeer = "cluster-client " + np.version
			port, err := freePort()
			if err != nil {
				return err
			}
			ng := &group{name: "node/tcp", kind: "node", transport: "tcp"}
			n := 0
			ng.start = func() (*agent, error) {
				n++
				return b.startAgent(fmt.Sprintf("node member %d", n), np.command(port))
			}
			if err := b.startMembers(ng); err != nil {
				return err
			}
		}
	}
	return nil
}

// startMembers starts the Leader, then three Followers.
func (b *bench) startMembers(g *group) error {
	b.add(g)
	for i := range 4 {
		a, err := g.start()
		if err != nil {
			return err
		}
		g.members = append(g.members, a)
		if i == 0 {
			r, err := a.do(request{Op: "role"}, 10*time.Second)
			if err != nil {
				return err
			}
			if !r.Leader {
				return fmt.Errorf("%s: the first member does not lead", g.name)
			}
		}
	}
	return nil
}

// systems returns the started groups of the given kinds, in start order.
func (b *bench) systems(kinds ...string) []*group {
	var out []*group
	for _, name := range b.order {
		if g := b.groups[name]; slices.Contains(kinds, g.kind) {
			out = append(out, g)
		}
	}
	return out
}

func (b *bench) measureSeq() error {
	systems := b.systems("floor", "cluster", "grpc", "node")
	samples := map[string][]int64{}
	per := max(b.opt.seqN/b.opt.rounds, 1)
	for round := range b.opt.rounds {
		for _, g := range systems {
			fs, _, err := g.followers()
			if err != nil {
				return err
			}
			if round == 0 { // warm up: connections, JIT, page faults
				if _, err := fs[0].do(request{Op: "seq", N: min(per, 500), Size: 64}, time.Minute); err != nil {
					return err
				}
			}
			r, err := fs[0].do(request{Op: "seq", N: per, Size: 64, Ms: b.opt.seqMs / b.opt.rounds}, 2*time.Minute)
			if err != nil {
				return err
			}
			samples[g.name] = append(samples[g.name], r.Lat...)
		}
	}
	for _, g := range systems {
		b.res.addSeq(g.name, samples[g.name])
	}
	return nil
}

func (b *bench) measureTput() error {
	systems := b.systems("floor", "cluster", "grpc", "node")
	type acc struct{ calls, ns float64 }
	sums := map[string]*acc{}
	for range b.opt.rounds {
		for _, g := range systems {
			fs, _, err := g.followers()
			if err != nil {
				return err
			}
			rs, err := doAll(fs, request{Op: "tput", Conc: b.opt.conc, Ms: b.opt.tputMs, Size: 64}, 2*time.Minute)
			if err != nil {
				return err
			}
			a := sums[g.name]
			if a == nil {
				a = &acc{}
				sums[g.name] = a
			}
			var longest int64
			for _, r := range rs {
				a.calls += float64(r.Calls)
				longest = max(longest, r.Ns)
			}
			a.ns += float64(longest)
			if g.kind != "floor" {
				continue
			}
			// The floor once more, batching: as many requests per write as there are
			// free slots, and every response that has arrived per read.
			rs, err = doAll(fs, request{Op: "tput", Conc: b.opt.conc, Ms: b.opt.tputMs, Size: 64, Mode: "batched"}, 2*time.Minute)
			if err != nil {
				return err
			}
			name := g.name + " batched"
			if sums[name] == nil {
				sums[name] = &acc{}
			}
			longest = 0
			for _, r := range rs {
				sums[name].calls += float64(r.Calls)
				longest = max(longest, r.Ns)
			}
			sums[name].ns += float64(longest)
		}
	}
	for _, g := range systems {
		a := sums[g.name]
		b.res.addTput(g.name, 3, b.opt.conc, a.calls/(a.ns/1e9))
		if a := sums[g.name+" batched"]; a != nil {
			b.res.addTput(g.name+" batched", 3, b.opt.conc, a.calls/(a.ns/1e9))
		}
	}
	return nil
}

// waitDelivered waits until every subscriber has n messages, or their counts stop
// moving for half a second.
func waitDelivered(subs []*agent, n int64) error {
	var last []int64
	still := time.Now()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		rs, err := doAll(subs, request{Op: "subcount"}, 10*time.Second)
		if err != nil {
			return err
		}
		counts := make([]int64, len(rs))
		done := true
		for i, r := range rs {
			counts[i] = r.Calls
			done = done && r.Calls >= n
		}
		if done {
			return nil
		}
		if !slices.Equal(counts, last) {
			last, still = counts, time.Now()
		} else if time.Since(still) > 500*time.Millisecond {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func (b *bench) measurePub() error {
	const topic, size = "ticks", 64
	for _, g := range b.systems("floor", "cluster", "node") {
		subs, pub, err := g.followers()
		if err != nil {
			return err
		}
		if _, err := doAll(subs, request{Op: "sub", Topic: topic, Size: size}, 10*time.Second); err != nil {
			return err
		}
		// Warm up until every subscriber hears (cluster-client acknowledges no subscribe).
		for deadline := time.Now().Add(10 * time.Second); ; {
			if _, err := pub.do(request{Op: "pub", Topic: topic, N: 1, Size: size}, 10*time.Second); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
			rs, err := doAll(subs, request{Op: "subcount"}, 10*time.Second)
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(rs, func(r response) bool { return r.Calls == 0 }) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: subscribers hear nothing", g.name)
			}
		}
		if _, err := doAll(subs, request{Op: "substats"}, 10*time.Second); err != nil {
			return err
		}
		// Paced: the delivery latency of a steady stream (2000 messages/s).
		if _, err := pub.do(request{Op: "pub", Topic: topic, N: b.opt.pubPaced, Size: size, Interval: 500}, 2*time.Minute); err != nil {
			return err
		}
		if err := waitDelivered(subs, int64(b.opt.pubPaced)); err != nil {
			return err
		}
		paced, err := doAll(subs, request{Op: "substats"}, 10*time.Second)
		if err != nil {
			return err
		}
		// Burst: as fast as the publisher can; messages/s reaching every subscriber.
		t0 := mono()
		if _, err := pub.do(request{Op: "pub", Topic: topic, N: b.opt.pubBurst, Size: size}, 2*time.Minute); err != nil {
			return err
		}
		if err := waitDelivered(subs, int64(b.opt.pubBurst)); err != nil {
			return err
		}
		burst, err := doAll(subs, request{Op: "substats"}, 10*time.Second)
		if err != nil {
			return err
		}
		b.res.addPub(g.name, b.opt.pubPaced, paced, b.opt.pubBurst, burst, t0)
	}
	return nil
}

// killOnce SIGKILLs g's Leader and returns how long until the first survivor, and
// until every survivor, had a call answered by the new Leader; then it starts a member
// in place of the dead one.
func (b *bench) killOnce(g *group) (first, all time.Duration, err error) {
	survivors, leader, err := g.followers()
	if err != nil {
		return 0, 0, err
	}
	t0 := mono()
	if err := leader.signalKill(); err != nil {
		return 0, 0, err
	}
	rs, err := doAll(survivors, request{Op: "probe", OldPID: leader.pid}, time.Minute)
	leader.reap()
	if err != nil {
		return 0, 0, err
	}
	lo, hi := rs[0].T, rs[0].T
	for _, r := range rs {
		lo, hi = min(lo, r.T), max(hi, r.T)
	}
	g.members = slices.DeleteFunc(g.members, func(a *agent) bool { return a == leader })
	a, err := g.start()
	if err != nil {
		return 0, 0, err
	}
	g.members = append(g.members, a)
	return time.Duration(lo - t0), time.Duration(hi - t0), nil
}

// lockFloor is the floor of failover: how soon after a lock holder's SIGKILL another
// process gets the flock.
func (b *bench) lockFloor() (time.Duration, error) {
	path := filepath.Join(b.dir, "floor.lock")
	holder, err := b.startAgent("lock holder", b.agentCmd("lock-holder", "-path", path, "-heap", fmt.Sprint(b.opt.heapMiB)))
	if err != nil {
		return 0, err
	}
	defer holder.reap()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		holder.kill()
		return 0, err
	}
	defer f.Close()
	t0 := mono()
	if err := holder.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return 0, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			d := time.Duration(mono() - t0)
			_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
			return d, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return 0, err
		}
		time.Sleep(20 * time.Microsecond)
	}
}

func (b *bench) measureFailover() error {
	systems := b.systems("cluster", "node")
	first := map[string][]time.Duration{}
	all := map[string][]time.Duration{}
	var floor []time.Duration
	for range b.opt.kills {
		d, err := b.lockFloor()
		if err != nil {
			return fmt.Errorf("lock floor: %w", err)
		}
		floor = append(floor, d)
		for _, g := range systems {
			f, a, err := b.killOnce(g)
			if err != nil {
				return err
			}
			first[g.name] = append(first[g.name], f)
			all[g.name] = append(all[g.name], a)
		}
	}
	b.res.addFailover("floor/flock", floor, floor)
	for _, g := range systems {
		b.res.addFailover(g.name, first[g.name], all[g.name])
	}
	return nil
}

func (b *bench) measureBlob() error {
	if len(b.opt.blobMiB) == 0 {
		return nil
	}
	for _, tr := range []string{"unix", "tcp"} {
		fg, cg := b.groups["floor/"+tr], b.groups["cluster/"+tr]
		if fg == nil || cg == nil {
			continue
		}
		fs, _, err := cg.followers()
		if err != nil {
			return err
		}
		for _, mib := range b.opt.blobMiB {
			n := max(1, min(20, 64/mib))
			if b.opt.smoke {
				n = 1
			}
			size := mib << 20
			raw := func(runs int) (response, error) {
				return fg.members[0].do(request{Op: "big", N: runs, Size: size}, 5*time.Minute)
			}
			trip := func(mode string, runs int) (response, error) {
				return fs[0].do(request{Op: "blob", N: runs, Size: size, Mode: mode}, 5*time.Minute)
			}
			// Untimed trips first, the modes alternating: the first trips of a size grow
			// the heaps, the write buffers and the TCP windows, and one each was not
			// enough (over TCP a Blob, measured first, came out at 2-4x inline Data;
			// either way round, once warm, they cost the same).
			if _, err := raw(1); err != nil {
				return err
			}
			modes := []string{"blob", "inline"}
			for range 2 {
				for _, mode := range modes {
					if _, err := trip(mode, max(1, n/4)); err != nil {
						return err
					}
				}
			}
			r, err := raw(n)
			if err != nil {
				return err
			}
			b.res.addBlob(fg.name, "raw", mib, r.Lat)
			// Then each mode's trips in two halves, A B then B A, so that a drift of the
			// machine hits both, and so does whatever going first costs.
			lat := map[string][]int64{}
			for i, half := range []int{(n + 1) / 2, n / 2} {
				if half == 0 {
					continue
				}
				order := modes
				if i == 1 {
					order = []string{modes[1], modes[0]}
				}
				for _, mode := range order {
					r, err := trip(mode, half)
					if err != nil {
						return err
					}
					lat[mode] = append(lat[mode], r.Lat...)
				}
			}
			for _, mode := range modes {
				b.res.addBlob(cg.name, mode, mib, lat[mode])
			}
		}
	}
	return nil
}

// measureIdle joins idle Followers (in one process) and asks the Leader what its heap
// and stacks grew by.
func (b *bench) measureIdle() error {
	g := b.groups["cluster/unix"]
	_, leader, err := g.followers()
	if err != nil {
		return err
	}
	before, err := leader.do(request{Op: "mem"}, time.Minute)
	if err != nil {
		return err
	}
	farm, err := g.start()
	if err != nil {
		return err
	}
	defer farm.stop()
	if _, err := farm.do(request{Op: "farm", N: b.opt.farm}, 5*time.Minute); err != nil {
		return err
	}
	after, err := leader.do(request{Op: "mem"}, time.Minute)
	if err != nil {
		return err
	}
	joined := after.Calls - before.Calls
	if joined <= 0 {
		return fmt.Errorf("the leader counts %d new followers", joined)
	}
	b.res.IdleFollower = &idleRow{Followers: int(joined), BytesEach: (after.Heap - before.Heap) / joined}
	return nil
}

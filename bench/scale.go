package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The scaling measurement (-only scale): failover and fan-out with N Follower
// processes, for N in -scale, beside a raw floor doing the same work. Every system of
// one N runs at once and the kills go round them in turn, so that a burst of noise
// hits them all.

const scaleTopic = "herd"

// herd is one system at one N: its members (cluster, node) or its clients (floor), and
// who serves them now.
type herd struct {
	name, kind string
	n          int
	members    []*agent // cluster, node: every member; floor: the clients
	leader     *agent   // cluster, node: the member that leads; floor: the serving server
	standby    *agent   // floor: the server waiting for the lock
	start      func() (*agent, error)
}

// survivors are the members that are not the leader (the floor: its clients).
func (h *herd) survivors() []*agent {
	return slices.DeleteFunc(slices.Clone(h.members), func(a *agent) bool { return a == h.leader })
}

func (h *herd) stop() {
	seen := map[*agent]bool{nil: true}
	var wg sync.WaitGroup
	for _, a := range append(slices.Clone(h.members), h.leader, h.standby) {
		if !seen[a] {
			seen[a] = true
			wg.Add(1)
			go func() { defer wg.Done(); a.stop() }()
		}
	}
	wg.Wait()
}

// startMany starts n agents with start, a few at a time.
func startMany(n int, start func() (*agent, error)) ([]*agent, error) {
	out := make([]*agent, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 6)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i], errs[i] = start()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, a := range out {
				if a != nil {
					a.kill()
				}
			}
			return nil, fmt.Errorf("agent %d of %d: %w", i, n, err)
		}
	}
	return out, nil
}

// waitLeads asks a until it says it leads.
func waitLeads(a *agent) error {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		r, err := a.do(request{Op: "role"}, 10*time.Second)
		if err != nil {
			return err
		}
		if r.Leader {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("%s does not lead", a.name)
}

// startFloorHerd starts the scaling floor at n: a serving server, a standby, n clients.
func (b *bench) startFloorHerd(tr string, n int) (_ *herd, err error) {
	dir, err := os.MkdirTemp(b.dir, "f")
	if err != nil {
		return nil, err
	}
	lockPath, gate, addr := filepath.Join(dir, "lock"), filepath.Join(dir, "gate"), filepath.Join(dir, "s")
	if tr == "tcp" {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr = fmt.Sprintf("127.0.0.1:%d", port)
	}
	h := &herd{name: "floor/" + tr, kind: "floor", n: n}
	defer func() {
		if err != nil { // what started of it would outlive the run
			h.stop()
		}
	}()
	var servers, clients atomic.Int64
	h.start = func() (*agent, error) {
		return b.startAgent(fmt.Sprintf("%s@%d server %d", h.name, n, servers.Add(1)), b.agentCmd("scale-server", "-lock", lockPath, "-gate", gate, "-net", tr, "-addr", addr))
	}
	if h.leader, err = h.start(); err != nil {
		return nil, err
	}
	if err := waitLeads(h.leader); err != nil {
		return nil, err
	}
	if h.standby, err = h.start(); err != nil {
		return nil, err
	}
	if h.members, err = startMany(n, func() (*agent, error) {
		return b.startAgent(fmt.Sprintf("%s@%d client %d", h.name, n, clients.Add(1)), b.agentCmd("scale-client", "-net", tr, "-addr", addr, "-gate", gate))
	}); err != nil {
		return nil, err
	}
	return h, nil
}

// startMemberHerd starts a cluster or node system at n: a Leader, then n Followers,
// every one subscribed to the herd's topic.
func (b *bench) startMemberHerd(name string, n int, start func(i int64) (*agent, error)) (*herd, error) {
	h := &herd{name: name, kind: strings.Split(name, "/")[0], n: n}
	var count atomic.Int64
	h.start = func() (*agent, error) {
		a, err := start(count.Add(1))
		if err != nil {
			return nil, err
		}
		if _, err := a.do(request{Op: "sub", Topic: scaleTopic, Size: 64}, 30*time.Second); err != nil {
			a.kill()
			return nil, err
		}
		return a, nil
	}
	first, err := h.start()
	if err != nil {
		return nil, err
	}
	if err := waitLeads(first); err != nil {
		first.kill()
		return nil, err
	}
	h.leader = first
	rest, err := startMany(n, h.start)
	if err != nil {
		first.kill()
		return nil, err
	}
	h.members = append([]*agent{first}, rest...)
	return h, nil
}

// killHerd SIGKILLs h's leader (the floor: its serving server) and returns how long
// until the first survivor, and until every one, had its call answered by the next;
// then it starts an agent in place of the dead one.
func (h *herd) kill() (first, all time.Duration, cpu cpuUse, err error) {
	old := h.leader
	survivors := h.survivors()
	next := survivors
	if h.kind == "floor" {
		next = append(slices.Clone(survivors), h.standby)
	}
	before := cpuOf(next)
	t0 := mono()
	if err := old.signalKill(); err != nil {
		return 0, 0, cpu, err
	}
	rs, err := doAll(survivors, request{Op: "probe", OldPID: old.pid}, 2*time.Minute)
	old.reap()
	if err != nil {
		return 0, 0, cpu, err
	}
	lo, hi := rs[0].T, rs[0].T
	for _, r := range rs {
		lo, hi = min(lo, r.T), max(hi, r.T)
	}
	newPID := rs[0].PID
	after := cpuOf(next)
	for i, a := range next {
		d := after[i].sub(before[i])
		if a.pid == newPID {
			cpu.leader = d
		} else {
			cpu.others = cpu.others.add(d)
		}
	}
	if h.kind == "floor" {
		h.leader, h.standby = h.standby, nil
		if h.leader.pid != newPID {
			return 0, 0, cpu, fmt.Errorf("%s: the clients are served by pid %d, not the standby %d", h.name, newPID, h.leader.pid)
		}
		if h.standby, err = h.start(); err != nil {
			return 0, 0, cpu, err
		}
	} else {
		h.members = slices.DeleteFunc(h.members, func(a *agent) bool { return a == old })
		h.leader = nil
		for _, a := range h.members {
			if a.pid == newPID {
				h.leader = a
			}
		}
		if h.leader == nil {
			return 0, 0, cpu, fmt.Errorf("%s: the survivors are served by pid %d, none of them", h.name, newPID)
		}
		a, err := h.start()
		if err != nil {
			return 0, 0, cpu, err
		}
		h.members = append(h.members, a)
	}
	return time.Duration(lo - t0), time.Duration(hi - t0), cpu, nil
}

// schedStat is what /proc/<pid>/task/*/schedstat say of a process's threads together:
// the time they ran and the time they waited for a CPU, nanoseconds.
type schedStat struct{ run, wait int64 }

func (a schedStat) sub(b schedStat) schedStat { return schedStat{a.run - b.run, a.wait - b.wait} }
func (a schedStat) add(b schedStat) schedStat { return schedStat{a.run + b.run, a.wait + b.wait} }

// cpuUse is what a failover cost: the next Leader (the floor: its standby server), and
// the other survivors together.
type cpuUse struct{ leader, others schedStat }

// cpuOf reads, for each agent, the CPU time its threads ran and waited for a CPU.
func cpuOf(as []*agent) []schedStat {
	out := make([]schedStat, len(as))
	for i, a := range as {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", a.pid))
		for _, e := range ents {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", a.pid, e.Name()))
			if err != nil {
				continue
			}
			var run, wait int64
			if _, err := fmt.Sscan(string(b), &run, &wait); err == nil {
				out[i] = out[i].add(schedStat{run, wait})
			}
		}
	}
	return out
}

// fanout has the leader publish m messages, paced, after every survivor hears it; for
// each message it returns the median delivery latency over the subscribers and the
// last one's.
func (h *herd) fanout(m int) (p50s, lasts []int64, err error) {
	subs := h.survivors()
	clear := func() error {
		_, err := doAll(subs, request{Op: "substats"}, 30*time.Second)
		return err
	}
	if err := clear(); err != nil {
		return nil, nil, err
	}
	// Until every subscriber hears: a survivor's invoke can be answered before its
	// subscriptions are back (cluster-client acknowledges none).
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := h.leader.do(request{Op: "pub", Topic: scaleTopic, N: 1, Size: 64}, 30*time.Second); err != nil {
			return nil, nil, err
		}
		time.Sleep(10 * time.Millisecond)
		rs, err := doAll(subs, request{Op: "subcount"}, 30*time.Second)
		if err != nil {
			return nil, nil, err
		}
		if !slices.ContainsFunc(rs, func(r response) bool { return r.Calls == 0 }) {
			break
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("%s: subscribers hear nothing after failover", h.name)
		}
	}
	if err := clear(); err != nil {
		return nil, nil, err
	}
	interval := 5000 + 50*len(subs) // µs: well apart, so that each message is its own fan-out
	if _, err := h.leader.do(request{Op: "pub", Topic: scaleTopic, N: m, Size: 64, Interval: interval}, 2*time.Minute); err != nil {
		return nil, nil, err
	}
	if err := waitDelivered(subs, int64(m)); err != nil {
		return nil, nil, err
	}
	rs, err := doAll(subs, request{Op: "substats"}, 30*time.Second)
	if err != nil {
		return nil, nil, err
	}
	for i := range m {
		var lat []int64
		for _, r := range rs {
			if i < len(r.Lat) {
				lat = append(lat, r.Lat[i])
			}
		}
		if len(lat) < len(rs) {
			return nil, nil, fmt.Errorf("%s: message %d reached %d of %d subscribers", h.name, i, len(lat), len(rs))
		}
		slices.Sort(lat)
		p50s, lasts = append(p50s, pct(lat, 0.5)), append(lasts, lat[len(lat)-1])
	}
	return p50s, lasts, nil
}

// rssKiB reads a process's resident set from /proc (0 where there is none).
func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// scaleSample is what one N's kills measured of one system.
type scaleSample struct {
	first, all, fanP50, fanLast []time.Duration
	rss                         []int64
	cpu                         []cpuUse
}

func (b *bench) measureScale() error {
	if b.opt.node != "off" && b.node == nil {
		if np, err := installNode(b.logf); err != nil {
			if b.opt.node == "on" {
				return fmt.Errorf("the Node.js peer: %w", err)
			}
			b.res.note("Node.js cluster-client: skipped: %v", err)
		} else {
			b.node = np
			b.res.Machine.NodePeer = "cluster-client " + np.version
		}
	}
	transports := []string{"unix"}
	if b.opt.tcp {
		transports = append(transports, "tcp")
	}
	for _, n := range b.opt.scaleN {
		b.logf("scale: N=%d (load %s)", n, loadavg())
		herds, err := b.startHerds(n, transports)
		if err != nil {
			for _, h := range herds {
				h.stop()
			}
			return fmt.Errorf("N=%d: %w", n, err)
		}
		err = b.scaleRounds(n, herds)
		for _, h := range herds {
			h.stop()
		}
		if err != nil {
			return fmt.Errorf("N=%d: %w", n, err)
		}
	}
	return nil
}

func (b *bench) startHerds(n int, transports []string) ([]*herd, error) {
	var herds []*herd
	want := func(name string) bool { return b.opt.scaleOnly == nil || b.opt.scaleOnly[name] }
	for _, tr := range transports {
		if !want("floor/" + tr) {
			continue
		}
		h, err := b.startFloorHerd(tr, n)
		if err != nil {
			return herds, err
		}
		herds = append(herds, h)
	}
	for _, tr := range transports {
		if !want("cluster/" + tr) {
			continue
		}
		dir, err := os.MkdirTemp(b.dir, tr)
		if err != nil {
			return herds, err
		}
		port := 0
		if tr == "tcp" {
			if port, err = freePort(); err != nil {
				return herds, err
			}
		}
		name := "cluster/" + tr
		h, err := b.startMemberHerd(name, n, func(i int64) (*agent, error) {
			return startMember(fmt.Sprintf("%s@%d member %d", name, n, i), b.self, memberConfig(dir, tr, port, b.opt.heapMiB), b.logw, b.opt.agentWait)
		})
		if err != nil {
			return herds, err
		}
		herds = append(herds, h)
	}
	if b.node != nil && !want("node/tcp") {
		return herds, nil
	}
	if b.node != nil && n <= b.opt.scaleNodeMax {
		port, err := freePort()
		if err != nil {
			return herds, err
		}
		h, err := b.startMemberHerd("node/tcp", n, func(i int64) (*agent, error) {
			return b.startAgent(fmt.Sprintf("node/tcp@%d member %d", n, i), b.node.command(port))
		})
		if err != nil {
			return herds, err
		}
		herds = append(herds, h)
	} else if b.node != nil {
		b.res.note("node/tcp is measured up to N=%d (-scale-node-max)", b.opt.scaleNodeMax)
	}
	return herds, nil
}

func (b *bench) scaleRounds(n int, herds []*herd) error {
	// Settle: the last joins finish, and a fan-out each warms the paths up.
	time.Sleep(200 * time.Millisecond)
	for _, h := range herds {
		if _, _, err := h.fanout(1); err != nil {
			return err
		}
	}
	samples := map[string]*scaleSample{}
	for k := range b.opt.scaleKills {
		for _, h := range herds {
			time.Sleep(50 * time.Millisecond)
			first, all, cpu, err := h.kill()
			if err != nil {
				return fmt.Errorf("kill %d: %w", k+1, err)
			}
			p50s, lasts, err := h.fanout(b.opt.scaleFan)
			if err != nil {
				return fmt.Errorf("kill %d: %w", k+1, err)
			}
			s := samples[h.name]
			if s == nil {
				s = &scaleSample{}
				samples[h.name] = s
			}
			s.first, s.all = append(s.first, first), append(s.all, all)
			for i := range p50s {
				s.fanP50, s.fanLast = append(s.fanP50, time.Duration(p50s[i])), append(s.fanLast, time.Duration(lasts[i]))
			}
			s.rss = append(s.rss, rssKiB(h.leader.pid))
			s.cpu = append(s.cpu, cpu)
		}
	}
	load := loadavg()
	for _, h := range herds {
		b.res.addScale(h.name, n, load, samples[h.name])
	}
	return nil
}

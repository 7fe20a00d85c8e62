// Command workerpool is the demo of cluster: a pool of worker processes on one host
// shares ONE connection to an upstream server.
//
//	go run ./examples/workerpool
//
// This directory is the demo's scaffolding, not meant to be copied: it uses this
// module's internal/upstream for the upstream server, which no program outside this
// module may import. The worker, the program to copy, is ./worker: it uses only the
// public API.
//
// The demo builds ./worker (or runs -worker), starts the upstream server in-process and
// four workers that Join one cluster, invoke the upstream and subscribe to a topic, and
// shows that the upstream saw one connection. Then it kills the Leader with SIGKILL and
// shows the failover: the new Leader, how long it took, and subscriptions still
// delivering; and it stops the survivors with SIGTERM, as a service manager does. It
// exits 0 on success and non-zero with a reason otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cluster-client-go/cluster/internal/upstream"
)

// workerPackage is the worker the demo builds when no -worker is given.
const workerPackage = "github.com/cluster-client-go/cluster/examples/workerpool/worker"

func main() {
	workers := flag.Int("workers", 4, "number of worker processes")
	timeout := flag.Duration("timeout", 15*time.Second, "give up after this long")
	worker := flag.String("worker", "", "the worker program (default: build "+workerPackage+" with go build)")
	hold := flag.Bool("hold", false, "after the failover, keep the pool running until interrupted (to look at it with clusterctl)")
	flag.Parse()
	if err := run(*worker, *workers, *timeout, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("OK")
}

func run(worker string, workers int, timeout time.Duration, hold bool) error {
	if worker == "" {
		dir, err := os.MkdirTemp("", "wp-worker")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		worker = filepath.Join(dir, "worker")
		if out, err := exec.Command("go", "build", "-o", worker, workerPackage).CombinedOutput(); err != nil {
			return fmt.Errorf("building the worker (run this from the repository, or pass -worker): %v\n%s", err, out)
		}
	}
	return coordinate(worker, workers, timeout, hold)
}

// demo is the coordinator's view of the run: the upstream server, the pool and what
// its workers logged.
type demo struct {
	up       *upstream.Server
	pool     *pool
	st       *state
	n        int
	deadline time.Time

	killed   *proc     // the Leader killed with SIGKILL
	killedAt time.Time // when
}

// coordinate runs the demo with n workers of the program worker; with hold, it waits
// for SIGINT or SIGTERM before it stops the pool.
func coordinate(worker string, n int, timeout time.Duration, hold bool) error {
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
	fmt.Printf("upstream server on %s; cluster dir %s\n", up.Addr(), dir)
	p, err := startPool(worker, n, "-dir", dir, "-upstream", up.Addr(), "-interval", "20ms")
	if err != nil {
		return err
	}
	defer p.stop()

	d := &demo{up: up, pool: p, st: newState(), n: n, deadline: time.Now().Add(timeout)}
	steps := []func() error{
		d.joined,        // every worker joins and invokes; the upstream sees one connection
		d.subscribed,    // one upstream subscription for every worker's
		d.killLeader,    // SIGKILL: a new Leader, timed
		d.resubscribed,  // the new Leader subscribes again for the survivors
		d.invokedAgain,  // every survivor invokes through the new Leader
		d.oneConnection, // the dead Leader's connection is gone
	}
	if hold {
		steps = append(steps, func() error { return d.hold(dir, timeout) })
	}
	steps = append(steps, d.stopGracefully) // SIGTERM: every survivor closes its Client and exits 0
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	fmt.Println()
	return nil
}

// wait consumes the workers' log lines until cond holds or the deadline passes. A
// worker that exits with an error fails the demo.
func (d *demo) wait(what string, cond func() bool) error {
	timeout := time.After(time.Until(d.deadline))
	for !cond() {
		select {
		case l := <-d.pool.lines:
			if l.Msg == "exiting" {
				return fmt.Errorf("worker pid %d: %s", l.PID, l.Err)
			}
			d.st.apply(l)
		case <-timeout:
			return fmt.Errorf("timed out waiting for %s", what)
		}
	}
	return nil
}

func (d *demo) joined() error {
	if err := d.wait("every worker to join and invoke", func() bool { return d.st.allInvoked(d.n) }); err != nil {
		return err
	}
	fmt.Printf("\n%d workers joined; roles:\n", d.n)
	d.st.printRoles()
	fmt.Printf("every worker invoked the upstream (incr counter now %d)\n", d.st.incr)
	fmt.Printf("upstream connections: now %d, most at once %d, total %d  <- one shared connection\n", d.up.Conns(), d.up.MaxConns(), d.up.TotalConns())
	if d.up.MaxConns() != 1 {
		return fmt.Errorf("the upstream saw %d connections at once, want 1", d.up.MaxConns())
	}
	return nil
}

func (d *demo) subscribed() error {
	if err := d.push("v1", 1, nil); err != nil {
		return err
	}
	fmt.Printf("upstream subscriptions to \"config\": %d (for %d subscribers)\n", d.up.Subscribers("config"), d.n)
	fmt.Println("pushed config v1: every worker received it")
	return nil
}

// push waits until the upstream's one connection is the one of the Leader of term and
// subscribes to "config" (just after a failover, the dead Leader's may not be closed
// yet), pushes version v of the config and waits until every worker but the dead has
// received it.
func (d *demo) push(v string, term int, dead map[int]bool) error {
	for d.up.TotalConns() != term || d.up.Conns() != 1 || d.up.Subscribers("config") != 1 {
		if time.Now().After(d.deadline) {
			return fmt.Errorf("timed out waiting for the leader of term %d to subscribe upstream: %d connections open, %d in all, %d subscribed",
				term, d.up.Conns(), d.up.TotalConns(), d.up.Subscribers("config"))
		}
		time.Sleep(time.Millisecond)
	}
	d.up.Push("config", []byte(v))
	return d.wait("every worker to receive config "+v, func() bool { return d.st.allGot(v, dead) })
}

func (d *demo) killLeader() error {
	leaderPID := d.st.leader()
	d.killed = d.pool.byPID(leaderPID)
	if d.killed == nil {
		return errors.New("no leader found among the workers")
	}
	fmt.Printf("\nSIGKILL the leader, worker %d (pid %d)...\n", d.killed.id, leaderPID)
	d.killedAt = time.Now()
	if err := d.killed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	if err := d.wait("a new leader", func() bool { return d.st.newLeader(leaderPID) != 0 }); err != nil {
		return err
	}
	newPID := d.st.newLeader(leaderPID)
	took := d.st.roleAt[newPID].Sub(d.killedAt)
	fmt.Printf("new leader: pid %d, term %d, %v after the kill\n", newPID, d.st.term[newPID], took.Round(10*time.Microsecond))
	return nil
}

// dead is the set of the killed Leader's pid.
func (d *demo) dead() map[int]bool { return map[int]bool{d.killed.pid(): true} }

func (d *demo) resubscribed() error {
	if err := d.push("v2", 2, d.dead()); err != nil {
		return err
	}
	fmt.Println("pushed config v2: every surviving worker received it (subscriptions re-established)")
	return nil
}

func (d *demo) invokedAgain() error {
	if err := d.wait("every survivor to invoke through the new leader", func() bool {
		return d.st.allInvokedSince(d.killedAt, d.dead(), d.n)
	}); err != nil {
		return err
	}
	fmt.Printf("every survivor invoked through the new leader (incr counter now %d)\n", d.st.incr)
	return nil
}

func (d *demo) oneConnection() error {
	for d.up.Conns() != 1 && time.Now().Before(d.deadline) {
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("upstream connections: now %d, most at once %d, total %d (one per leadership term)\n", d.up.Conns(), d.up.MaxConns(), d.up.TotalConns())
	if d.up.Conns() != 1 {
		return fmt.Errorf("after failover the upstream has %d connections, want 1", d.up.Conns())
	}
	return nil
}

func (d *demo) stopGracefully() error {
	survivors := d.pool.except(d.killed)
	fmt.Println("\nSIGTERM the survivors...")
	for _, p := range survivors {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return err
		}
	}
	if err := d.wait("every survivor to close its Client", func() bool { return d.st.allClosed(d.dead()) }); err != nil {
		return err
	}
	for _, p := range survivors {
		select {
		case <-p.done:
		case <-time.After(time.Until(d.deadline)):
			return fmt.Errorf("worker %d (pid %d) did not exit after SIGTERM", p.id, p.pid())
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			return fmt.Errorf("worker %d (pid %d) exited with status %d after SIGTERM", p.id, p.pid(), code)
		}
	}
	fmt.Println("each closed its Client and exited 0")
	return nil
}

// hold keeps the pool running until SIGINT or SIGTERM, for a look with clusterctl.
func (d *demo) hold(dir string, timeout time.Duration) error {
	fmt.Printf("\nthe pool runs on; look at it with\n  go run ./cmd/clusterctl status -name workerpool -dir %s\nand end the demo with Ctrl-C\n", dir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for ctx.Err() == nil {
		select {
		case l := <-d.pool.lines: // keep reading the workers' logs
			if l.Msg == "exiting" {
				return fmt.Errorf("worker pid %d: %s", l.PID, l.Err)
			}
			d.st.apply(l)
		case <-ctx.Done():
		}
	}
	d.deadline = time.Now().Add(timeout)
	return nil
}

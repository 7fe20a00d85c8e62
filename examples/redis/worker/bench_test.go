package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/examples/redis/internal/redistest"
	"github.com/cluster-client-go/cluster/examples/redis/sharedredis"
)

// BenchmarkIncr compares a pool of worker processes that share the Leader's Redis
// connections (shared) with the same pool where every worker has its own go-redis
// client (own). Each worker subscribes to one channel, then, at a common start, runs
// its share of b.N INCRs, one at a time. It reports the pool's INCR throughput and
// the Redis connections (CLIENT LIST) it holds after the run:
//
//	go test -run '^$' -bench Incr -benchtime 200000x ./worker
func BenchmarkIncr(b *testing.B) {
	for _, workers := range []int{4, 16} {
		for _, mode := range []string{"shared", "own"} {
			b.Run(fmt.Sprintf("%s/workers=%d", mode, workers), func(b *testing.B) { benchIncr(b, mode, workers) })
		}
	}
}

type benchProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func (p *benchProc) expect(b *testing.B, want string) {
	b.Helper()
	if !p.out.Scan() {
		b.Fatalf("worker %d ended before %q: %v", p.cmd.Process.Pid, want, p.out.Err())
	}
	if got := p.out.Text(); got != want {
		b.Fatalf("worker %d said %q, want %q", p.cmd.Process.Pid, got, want)
	}
}

func benchIncr(b *testing.B, mode string, workers int) {
	srv := redistest.Start(b)
	dir, err := os.MkdirTemp("", "")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	procs := make([]*benchProc, workers)
	defer func() {
		for _, p := range procs {
			if p != nil {
				p.in.Close()
				_ = p.cmd.Wait()
			}
		}
	}()
	for i := range procs {
		ops := b.N / workers
		if i < b.N%workers {
			ops++
		}
		cmd := exec.Command(self, "-redis", srv.Addr, "-dir", dir, "-n", strconv.Itoa(ops))
		cmd.Env = append(os.Environ(), workerEnv+"="+mode)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		procs[i] = &benchProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	}
	for _, p := range procs {
		p.expect(b, "ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	b.ResetTimer()
	start := time.Now()
	for _, p := range procs {
		if _, err := io.WriteString(p.in, "go\n"); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range procs {
		p.expect(b, "done")
	}
	elapsed := time.Since(start)
	b.StopTimer()

	// Counted with every worker still connected, after the load: a pool that opened
	// connections under load still has them.
	clients, err := srv.Clients(ctx)
	if err != nil {
		b.Fatal(err)
	}

	if got, err := srv.CLI(ctx, "GET", "hits"); err != nil || got != strconv.Itoa(b.N) {
		b.Fatalf("hits = %q (%v), want %d", got, err, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "incr/s")
	b.ReportMetric(float64(len(clients)), "redis-conns")
}

// benchWorker is one worker of BenchmarkIncr: it connects (mode "shared": Join with
// sharedredis; "own": its own go-redis client), subscribes to "news", prints "ready",
// waits for a line on stdin, runs -n INCR hits one at a time, prints "done" and exits
// when stdin closes.
func benchWorker(mode string, args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	addr := fs.String("redis", "", "Redis host:port")
	dir := fs.String("dir", "", "cluster directory")
	n := fs.Int("n", 0, "INCRs to run")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "bench worker %d (%s): %v\n", os.Getpid(), mode, err)
		return 1
	}
	var incr func() error
	switch mode {
	case "shared":
		c, err := cluster.Join(ctx, cluster.Config{
			Name:       "bench",
			Dir:        *dir,
			NewService: sharedredis.NewService(redis.Options{Addr: *addr}),
			Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		})
		if err != nil {
			return fail(err)
		}
		defer c.Close()
		sub, err := c.Subscribe(ctx, "news", func(cluster.Message) {})
		if err != nil {
			return fail(err)
		}
		defer sub.Close()
		incr = func() error {
			_, err := sharedredis.Incr.Invoke(ctx, c, "hits")
			return err
		}
	case "own":
		rdb := redis.NewClient(&redis.Options{Addr: *addr, PoolSize: 1, PipelinePoolSize: -1, ClientName: fmt.Sprintf("own-%d", os.Getpid())})
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return fail(err)
		}
		ps := rdb.Subscribe(ctx, "news")
		defer ps.Close()
		if _, err := ps.Receive(ctx); err != nil { // the confirmation
			return fail(err)
		}
		incr = func() error { return rdb.Incr(ctx, "hits").Err() }
	default:
		return fail(fmt.Errorf("unknown mode %q", mode))
	}

	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		return fail(fmt.Errorf("no start line: %v", in.Err()))
	}
	for range *n {
		if err := incr(); err != nil {
			return fail(err)
		}
	}
	fmt.Println("done")
	for in.Scan() { // until the benchmark closes stdin
	}
	return 0
}

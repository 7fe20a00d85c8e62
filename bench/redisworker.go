package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/examples/redis/sharedredis"
)

// redisWorkerMain is one worker process of the Redis measurement. With -mode own it
// has a go-redis client of its own (go-redis's defaults: a pool that opens a
// connection per concurrent command, up to 10 per CPU); with -mode shared it joins a
// cluster whose Service is sharedredis, and sends its commands through the Leader
// (the worker that leads runs them in process). It answers the ops "incr" (req.Conc
// callers, each running INCR one at a time for req.Ms), "role" and "prof".
func redisWorkerMain(args []string) {
	fs := flag.NewFlagSet("redis-worker", flag.ExitOnError)
	mode := fs.String("mode", "own", "own (a go-redis client) or shared (through the Leader)")
	addr := fs.String("addr", "", "Redis host:port")
	dir := fs.String("dir", "", "cluster directory (shared)")
	_ = fs.Parse(args)
	ctx := context.Background()
	var incr func(context.Context) error
	var role func() bool
	switch *mode {
	case "own":
		rdb := redis.NewClient(&redis.Options{Addr: *addr, ClientName: fmt.Sprintf("bench-own-%d", os.Getpid())})
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			fmt.Fprintln(os.Stderr, "redis-worker:", err)
			os.Exit(1)
		}
		incr = func(ctx context.Context) error { return rdb.Incr(ctx, "hits").Err() }
		role = func() bool { return false }
	case "shared":
		c, err := cluster.Join(ctx, cluster.Config{
			Name: "redis", Dir: *dir,
			Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
			NewService: sharedredis.NewService(redis.Options{Addr: *addr}),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "redis-worker:", err)
			os.Exit(1)
		}
		defer c.Close()
		incr = func(ctx context.Context) error {
			_, err := sharedredis.Incr.Invoke(ctx, c, "hits")
			return err
		}
		role = func() bool { return c.Role().Role == cluster.RoleLeader }
	default:
		fmt.Fprintln(os.Stderr, "redis-worker: unknown mode", *mode)
		os.Exit(2)
	}
	var prof profiler
	serveAgent(func(req request) response {
		switch req.Op {
		case "role":
			return response{PID: os.Getpid(), Leader: role()}
		case "incr":
			return incrLoad(req, incr)
		case "prof":
			return errResponse(prof.do(req.Mode, req.Topic))
		}
		return response{Err: "unknown op " + req.Op}
	})
	_ = prof.do("stop", "")
}

// incrLoad runs req.Conc callers, each calling incr one call at a time, for req.Ms
// milliseconds; it returns every call's latency, the calls made and the time taken.
func incrLoad(req request, incr func(context.Context) error) response {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(req.Ms)*time.Millisecond+time.Minute)
	defer cancel()
	var (
		mu     sync.Mutex
		lat    []int64
		failed atomic.Value
		wg     sync.WaitGroup
	)
	t0 := mono()
	end := t0 + int64(req.Ms)*1e6
	for range max(req.Conc, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]int64, 0, 1024)
			for {
				start := mono()
				if start >= end {
					break
				}
				if err := incr(ctx); err != nil {
					failed.Store(err.Error())
					break
				}
				mine = append(mine, mono()-start)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if e, ok := failed.Load().(string); ok {
		return response{Err: e}
	}
	return response{Calls: int64(len(lat)), Ns: mono() - t0, Lat: lat}
}

// profiler writes a CPU profile ("cpu") or an execution trace ("trace") of the
// process to a file, from one "prof" op until the next ("stop").
type profiler struct {
	f    *os.File
	mode string
}

func (p *profiler) do(mode, path string) error {
	if p.f != nil {
		switch p.mode {
		case "cpu":
			pprof.StopCPUProfile()
		case "trace":
			trace.Stop()
		}
		err := p.f.Close()
		p.f, p.mode = nil, ""
		if err != nil {
			return err
		}
	}
	if mode == "stop" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	switch mode {
	case "cpu":
		err = pprof.StartCPUProfile(f)
	case "trace":
		err = trace.Start(f)
	default:
		err = errors.New("prof: mode is cpu, trace or stop, not " + mode)
	}
	if err != nil {
		f.Close()
		return err
	}
	p.f, p.mode = f, mode
	return nil
}

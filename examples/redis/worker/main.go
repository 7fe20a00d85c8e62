// Command worker is one process of a worker pool whose processes share the Leader's
// Redis connections through cluster, instead of each opening its own.
//
//	go run ./worker -redis 127.0.0.1:6379 -sub news,psub:alerts.* -incr hits -n 100
//
// Start as many as you like with the same -dir and -name: one of them leads and holds
// the two Redis connections (commands, pub/sub), the others send it their commands and
// subscriptions. Each worker
//
//   - Joins the cluster and subscribes to every topic of -sub (a topic starting with
//     "psub:" is a Redis pattern);
//   - runs INCR -incr, -n times, through the Leader;
//   - prints {"event":"ready"} and then, for every message it receives, runs INCR
//     seen:<payload> and prints the message with the counter's new value: so after
//     PUBLISH news hello, GET seen:hello is the number of workers that received it;
//   - runs until SIGINT or SIGTERM, then leaves the cluster (a Leader hands over).
//
// Every line it prints is a JSON event: role (each role change), ready, message and
// error. Kill the Leader with SIGKILL: another worker leads within milliseconds,
// subscribes again on Redis, and messages keep arriving everywhere.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/examples/redis/sharedredis"
)

// event is one line of the worker's output.
type event struct {
	Event string `json:"event"` // role, ready, message, error
	PID   int    `json:"pid"`
	Role  string `json:"role,omitempty"`
	Term  uint64 `json:"term,omitempty"`
	Topic string `json:"topic,omitempty"`
	Data  string `json:"data,omitempty"`
	Seen  int64  `json:"seen,omitempty"` // message: GET seen:<data> after this worker's INCR
	Err   string `json:"err,omitempty"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the worker: it returns the exit code once ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("redis", "127.0.0.1:6379", "Redis `host:port`")
	dir := fs.String("dir", "", "cluster directory shared by the workers (default: the library's per-user directory)")
	name := fs.String("name", "redis", "cluster name: workers with the same -dir and -name share one Leader")
	subs := fs.String("sub", "", "comma-separated topics to subscribe to (psub:<pattern> for a pattern)")
	incrKey := fs.String("incr", "", "key to INCR at start")
	n := fs.Int("n", 0, "how many times to INCR -incr")
	verbose := fs.Bool("v", false, "log the library's role changes and warnings on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *n > 0 && *incrKey == "" {
		fmt.Fprintln(stderr, "worker: -n needs -incr, the key to INCR")
		return 2
	}

	var outMu sync.Mutex
	enc := json.NewEncoder(stdout)
	emit := func(e event) {
		e.PID = os.Getpid()
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(e)
	}
	fail := func(err error) int {
		emit(event{Event: "error", Err: err.Error()})
		return 1
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelInfo
	}

	joinCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := cluster.Join(joinCtx, cluster.Config{
		Name:       *name,
		Dir:        *dir,
		NewService: sharedredis.NewService(redis.Options{Addr: *addr}),
		Logger:     slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		OnRoleChange: func(r cluster.RoleInfo) {
			emit(event{Event: "role", Role: r.Role.String(), Term: r.Term})
		},
	})
	if err != nil {
		return fail(err)
	}
	defer c.Close()

	// Messages are handled on their subscription's goroutine, one at a time per topic.
	onMessage := func(topic string) func(cluster.Message) {
		return func(m cluster.Message) {
			ev := event{Event: "message", Topic: topic, Data: string(m.Data)}
			seen, err := incr(ctx, c, "seen:"+string(m.Data))
			if err != nil {
				ev.Err = err.Error()
			}
			ev.Seen = seen
			emit(ev)
		}
	}
	for topic := range strings.SplitSeq(*subs, ",") {
		if topic = strings.TrimSpace(topic); topic == "" {
			continue
		}
		sub, err := c.Subscribe(joinCtx, topic, onMessage(topic))
		if err != nil {
			return fail(err)
		}
		defer sub.Close()
	}
	for range *n {
		if _, err := incr(ctx, c, *incrKey); err != nil {
			return fail(err)
		}
	}
	emit(event{Event: "ready"})
	<-ctx.Done()
	return 0
}

// callTimeout bounds each INCR. A call in flight when the Leader dies fails with
// cluster.ErrLeaderLost and may or may not have run (at-most-once): the worker
// reports it rather than retry a command that is not idempotent.
const callTimeout = 10 * time.Second

func incr(ctx context.Context, c *cluster.Client, key string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	return sharedredis.Incr.Invoke(ctx, c, key)
}

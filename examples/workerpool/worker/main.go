// Command worker is one process of a worker pool whose processes share ONE connection to
// an upstream server through cluster. It is the part of examples/workerpool to copy: it
// uses only cluster's public API and the standard library, and builds in a module of
// your own. upstream.go beside it is its Service, a client for the demo's upstream
// server: replace it with your own.
//
//	worker -upstream 127.0.0.1:7070 -dir /tmp/pool -interval 1s
//
// Start as many as you like with the same -name and -dir: one of them leads and holds
// the upstream connection, the others call through it. Each worker joins the cluster,
// subscribes to the topic "config", calls the upstream's "incr" every -interval, and
// logs its role changes, the results and the messages as JSON lines on stdout. On
// SIGTERM or SIGINT it closes its Client, so that a Leader hands over gracefully; a
// worker killed outright (SIGKILL) is replaced by another within milliseconds.
//
// The demo (go run ./examples/workerpool) builds this program and runs four of them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cluster-client-go/cluster"
)

func main() {
	name := flag.String("name", "workerpool", "the cluster's name, the same in every worker")
	dir := flag.String("dir", "", "the directory of the cluster's lock and socket, the same in every worker (default: $XDG_RUNTIME_DIR/cluster)")
	addr := flag.String("upstream", "127.0.0.1:7070", "the upstream server's address")
	interval := flag.Duration("interval", time.Second, "how often to call the upstream")
	flag.Parse()

	log := slog.New(slog.NewJSONHandler(os.Stdout, nil)).With("pid", os.Getpid())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := cluster.Config{
		Name:       *name,
		Dir:        *dir,
		NewService: dialUpstream(*addr), // only the Leader calls it
		Logger:     log,
		OnRoleChange: func(r cluster.RoleInfo) {
			log.Info("role", "role", r.Role.String(), "term", r.Term)
		},
	}
	if err := work(ctx, log, cfg, *interval); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

// work joins the cluster, subscribes, and calls the upstream until ctx ends.
func work(ctx context.Context, log *slog.Logger, cfg cluster.Config, interval time.Duration) error {
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := cluster.Join(jctx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("joining cluster %q: %w", cfg.Name, err)
	}
	defer func() {
		// A Leader hands over to another worker; a Follower disconnects.
		if err := c.Close(); err != nil {
			log.Warn("closing", "err", err)
		}
		log.Info("closed")
	}()
	sub, err := c.Subscribe(ctx, "config", func(m cluster.Message) {
		log.Info("config", "data", string(m.Data))
	})
	if err != nil {
		return fmt.Errorf("subscribing to config: %w", err)
	}
	defer sub.Close()

	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		out, err := c.Invoke(cctx, "incr", cluster.Message{})
		cancel()
		r := c.Role()
		switch {
		case err == nil:
			log.Info("incr", "n", string(out.Data), "role", r.Role.String(), "term", r.Term)
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, cluster.ErrLeaderLost):
			// The Leader died during the call: it may or may not have run, and is never re-sent.
			log.Warn("incr lost with the leader", "err", err)
		default:
			log.Warn("incr failed", "err", err)
		}
	}
}

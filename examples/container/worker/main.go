// Command worker is a worker meant to run as several replicas of one container image on
// one host, sharing ONE connection to an upstream server through cluster. It is the part
// of examples/container to copy: it uses only cluster's public API and the standard
// library, and builds in a module of your own; upstream.go beside it is its Service, a
// client for the demo's upstream server (../upstream): replace it with your own. The
// replicas share a volume mounted at the same path in each (CLUSTER_DIR), which holds
// the election lock and the Leader's socket; they share nothing else: not the pid
// namespace, not the network namespace. See ../README.md, ../Dockerfile and
// ../compose.yaml.
//
// Environment:
//
//	CLUSTER_DIR         the shared volume's mount point (default /run/cluster)
//	CLUSTER_NAME        the cluster's name, the same in every replica (default "demo")
//	CLUSTER_ALLOW_GIDS  comma-separated gids shared by replicas that run as different
//	                    uids (Config.AllowGIDs); empty: every replica runs as one uid
//	UPSTREAM_ADDR       the upstream server (default upstream:7070)
//	WORK_INTERVAL       how often each worker calls the upstream (default 1s)
//	LOG_CALLS           all (default): log every call's outcome; changes: log a call only
//	                    when its outcome differs from the previous one's (the first call
//	                    served in each term, the first after a failure, every failure)
//	LOG_FORMAT          text (default) or json
//
// Each worker joins the cluster, subscribes to the topic "config", and calls the
// upstream's "incr" every WORK_INTERVAL through whichever replica leads, logging its role
// and term. On SIGTERM (docker stop, compose down) it closes its Client: a Leader hands
// over to another replica gracefully. A replica killed outright (SIGKILL, OOM, a crashed
// container) is replaced within milliseconds by another, with no cleanup of the volume.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cluster-client-go/cluster"
)

func main() {
	log := logger(os.Getenv("LOG_FORMAT"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := work(ctx, log); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

func logger(format string) *slog.Logger {
	host, _ := os.Hostname()
	var h slog.Handler = slog.NewTextHandler(os.Stdout, nil)
	if format == "json" {
		h = slog.NewJSONHandler(os.Stdout, nil)
	}
	return slog.New(h).With("host", host, "pid", os.Getpid())
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// settings is a worker's configuration, read from the environment.
type settings struct {
	cluster  cluster.Config
	interval time.Duration
	logAll   bool // LOG_CALLS=all
}

// config reads the worker's settings from the environment.
func config(log *slog.Logger) (settings, error) {
	cfg := cluster.Config{
		Name:       env("CLUSTER_NAME", "demo"),
		Dir:        env("CLUSTER_DIR", "/run/cluster"),
		NewService: dialUpstream(env("UPSTREAM_ADDR", "upstream:7070")), // only the Leader calls it
		Logger:     log,
		OnRoleChange: func(r cluster.RoleInfo) {
			log.Info("role", "role", r.Role.String(), "term", r.Term)
		},
	}
	for _, f := range strings.FieldsFunc(os.Getenv("CLUSTER_ALLOW_GIDS"), func(r rune) bool { return r == ',' || r == ' ' }) {
		gid, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return settings{}, fmt.Errorf("CLUSTER_ALLOW_GIDS: %q is not a gid", f)
		}
		cfg.AllowGIDs = append(cfg.AllowGIDs, uint32(gid))
	}
	interval, err := time.ParseDuration(env("WORK_INTERVAL", "1s"))
	if err != nil || interval <= 0 {
		return settings{}, fmt.Errorf("WORK_INTERVAL: %q is not a positive duration", os.Getenv("WORK_INTERVAL"))
	}
	calls := env("LOG_CALLS", "all")
	if calls != "all" && calls != "changes" {
		return settings{}, fmt.Errorf("LOG_CALLS: %q is neither all nor changes", calls)
	}
	return settings{cluster: cfg, interval: interval, logAll: calls == "all"}, nil
}

// work is one replica: join, subscribe, call the upstream until ctx ends, hand over.
func work(ctx context.Context, log *slog.Logger) error {
	set, err := config(log)
	if err != nil {
		return err
	}
	cfg := set.cluster
	jctx, cancel := context.WithTimeout(ctx, time.Minute)
	c, err := cluster.Join(jctx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("joining cluster %q in %s: %w", cfg.Name, cfg.Dir, err)
	}
	defer func() {
		if err := c.Close(); err != nil {
			log.Warn("closing", "err", err)
		}
		log.Info("closed")
	}()
	r := c.Role()
	log.Info("joined", "role", r.Role.String(), "term", r.Term, "dir", cfg.Dir, "transport", c.Stats().Transport)
	sub, err := c.Subscribe(ctx, "config", func(m cluster.Message) {
		log.Info("config", "data", string(m.Data))
	})
	if err != nil {
		return fmt.Errorf("subscribing to config: %w", err)
	}
	defer sub.Close()

	tick := time.NewTicker(set.interval)
	defer tick.Stop()
	// The previous call's outcome, for LOG_CALLS=changes.
	servedTerm, served := uint64(0), false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := c.Invoke(cctx, "incr", cluster.Message{})
		ccancel()
		r := c.Role()
		switch {
		case err == nil:
			if set.logAll || !served || r.Term != servedTerm {
				log.Info("incr", "n", string(out.Data), "role", r.Role.String(), "term", r.Term)
			}
			servedTerm, served = r.Term, true
		case errors.Is(err, cluster.ErrLeaderLost):
			// The Leader's container died mid-call: at-most-once, so we are told, not retried.
			log.Warn("incr lost with the leader", "err", err)
			served = false
		case ctx.Err() != nil:
			return nil
		default:
			log.Warn("incr failed", "err", err)
			served = false
		}
	}
}

// Command example serves a cluster member's metrics: Prometheus at /metrics and expvar
// at /debug/vars, on a loopback port.
//
//	cd prometheus && go run ./example
//	curl -s http://127.0.0.1:PORT/metrics | grep ^cluster_
//	curl -s http://127.0.0.1:PORT/debug/vars
//
// It joins the cluster -name in -dir (the first one to start leads; start it twice with
// the same -dir to see a Follower, and stop the first to see a failover), invokes a
// trivial in-process Service every -every so that the counters move, and serves until
// interrupted.
package main

import (
	"context"
	"errors"
	"expvar"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/clusterexpvar"
	clusterprom "github.com/cluster-client-go/cluster/prometheus"
)

// options are the command's flags.
type options struct {
	name, dir, addr string
	every           time.Duration
	varName         string // the expvar name of the Stats, "cluster"
}

func main() {
	o := options{varName: "cluster"}
	flag.StringVar(&o.name, "name", "metrics-example", "the cluster's name")
	flag.StringVar(&o.dir, "dir", "", "the cluster's directory (default: the library's)")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:0", "where to serve /metrics and /debug/vars (port 0: any free one)")
	flag.DurationVar(&o.every, "every", time.Second, "how often to invoke the Service")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, o, func(c *cluster.Client, addr net.Addr) {
		st := c.Stats()
		fmt.Printf("%s of cluster %q, term %d\n", st.Role, st.Name, st.Term)
		fmt.Printf("serving http://%s/metrics and http://%s/debug/vars\n", addr, addr)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

// run joins the cluster, publishes its Stats with expvar and a Prometheus Collector,
// calls ready with the Client and the address it serves on, and serves until ctx ends.
func run(ctx context.Context, o options, ready func(*cluster.Client, net.Addr)) error {
	c, err := cluster.Join(ctx, cluster.Config{Name: o.name, Dir: o.dir, NewService: newClock})
	if err != nil {
		return err
	}
	defer c.Close()

	// expvar: one call; http.DefaultServeMux serves it too, expvar.Handler anywhere.
	if err := clusterexpvar.Publish(o.varName, c); err != nil {
		return err
	}
	// Prometheus: the Collector, beside the Go runtime's and the process's metrics.
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		clusterprom.NewCollector(c),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /debug/vars", expvar.Handler())

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ready(c, ln.Addr())

	t := time.NewTicker(o.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shut)
			return nil
		case err := <-served:
			return err
		case <-t.C:
			if _, err := c.Invoke(ctx, "now", cluster.Message{}); err != nil && !errors.Is(err, context.Canceled) {
				slog.Warn("example: invoke failed", "err", err)
			}
		}
	}
}

// clock is the trivial Service the example calls: "now" answers the Leader's time.
type clock struct{}

func newClock(context.Context) (cluster.Service, error) { return clock{}, nil }

func (clock) Invoke(_ context.Context, method string, _ cluster.Message) (cluster.Message, error) {
	if method != "now" {
		return cluster.Message{}, fmt.Errorf("unknown method %q", method)
	}
	return cluster.Message{Data: []byte(time.Now().Format(time.RFC3339Nano))}, nil
}

func (clock) Subscribe(context.Context, string, func(cluster.Message)) (func(), error) {
	return func() {}, nil
}

func (clock) Publish(context.Context, string, cluster.Message) error { return nil }

func (clock) Close() error { return nil }

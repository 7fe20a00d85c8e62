// Command upstream is the demo's upstream server, the server that the replicas of
// ../worker share one connection to. It is the demo's scaffolding, not meant to be
// copied: it uses this module's internal/upstream, which no program outside this module
// may import. The image that ../Dockerfile builds holds it beside the worker, and
// ../compose.yaml runs it as the service "upstream":
//
//	upstream -listen :7070
//
// LOG_FORMAT in its environment is text (default) or json.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cluster-client-go/cluster/internal/upstream"
)

func main() {
	addr := flag.String("listen", ":7070", "the address to listen on")
	flag.Parse()
	host, _ := os.Hostname()
	var h slog.Handler = slog.NewTextHandler(os.Stdout, nil)
	if os.Getenv("LOG_FORMAT") == "json" {
		h = slog.NewJSONHandler(os.Stdout, nil)
	}
	log := slog.New(h).With("host", host, "pid", os.Getpid())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serveUpstream(ctx, log, *addr); err != nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

// serveUpstream runs the demo upstream server: it pushes a config update every 5 s and
// logs its connections whenever their numbers change ("upstream connections": open now,
// ever accepted, and the most ever live at once). On SIGTERM it logs the final numbers
// ("upstream stopped"), the last connections judged first (see upstream.Server.MaxConns).
func serveUpstream(ctx context.Context, log *slog.Logger, addr string) error {
	s, err := upstream.Start(addr)
	if err != nil {
		return err
	}
	defer s.Close()
	log.Info("upstream listening", "addr", s.Addr())
	counts := func() []any {
		c := []any{"open", s.Conns(), "ever", s.TotalConns(), "most_at_once", s.MaxConns()}
		if o := s.Overlap(); o != "" {
			c = append(c, "overlap", o)
		}
		return c
	}
	push := time.NewTicker(5 * time.Second)
	defer push.Stop()
	watch := time.NewTicker(10 * time.Millisecond)
	defer watch.Stop()
	var seen [3]int
	for v := 1; ; {
		select {
		case <-ctx.Done():
			s.Judged()
			log.Info("upstream stopped", counts()...)
			return nil
		case <-watch.C:
			if now := [3]int{s.Conns(), s.TotalConns(), s.MaxConns()}; now != seen {
				seen = now
				log.Info("upstream connections", counts()...)
			}
		case <-push.C:
			n := s.Push("config", []byte("v"+strconv.Itoa(v)))
			log.Info("pushed config", "version", v, "subscribed_connections", n)
			v++
		}
	}
}

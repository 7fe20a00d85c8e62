package sharedredis_test

import (
	"context"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/examples/redis/internal/redistest"
	"github.com/cluster-client-go/cluster/examples/redis/sharedredis"
)

// BenchmarkServiceIncr is the ceiling of the Leader's one command connection: 16
// goroutines of one process call the Service's Invoke (INCR) directly, with no
// library hop, and go-redis's autopipeliner batches what arrives together.
//
//	go test -run '^$' -bench ServiceIncr -benchtime 100000x ./sharedredis
func BenchmarkServiceIncr(b *testing.B) {
	srv := redistest.Start(b)
	svc, err := sharedredis.NewService(redis.Options{Addr: srv.Addr})(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	const callers = 16
	req := cluster.Message{Data: []byte(`"hits"`)}
	b.ResetTimer()
	var wg sync.WaitGroup
	for i := range callers {
		n := b.N / callers
		if i < b.N%callers {
			n++
		}
		wg.Go(func() {
			for range n {
				if _, err := svc.Invoke(context.Background(), sharedredis.Incr.Name, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "incr/s")
}

package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/blob"
)

// echoService answers every Invoke with its request: the cost measured is the
// library's, not a server's.
type echoService struct{ *broker }

func (echoService) Invoke(_ context.Context, _ string, req cluster.Message) (cluster.Message, error) {
	return req, nil
}

// benchTransports are the transports the per-call benchmarks run over.
var benchTransports = []cluster.Transport{cluster.TransportUnix, cluster.TransportTCP}

func forEachBenchTransport(b *testing.B, fn func(b *testing.B, tr cluster.Transport)) {
	for _, tr := range benchTransports {
		b.Run(tr.String(), func(b *testing.B) { fn(b, tr) })
	}
}

func benchCluster(b *testing.B, tr cluster.Transport, mods ...func(*cluster.Config)) (leader, follower *cluster.Client) {
	b.Helper()
	port := 0
	if tr == cluster.TransportTCP {
		port = freePort(b)
	}
	dir, err := os.MkdirTemp("", "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	join := func() *cluster.Client {
		cfg := cluster.Config{
			Name: "bench", Dir: dir, Logger: slog.New(slog.DiscardHandler),
			Transport: tr, Port: port,
			NewService: func(context.Context) (cluster.Service, error) {
				return echoService{broker: &broker{subs: map[string]map[int]func(cluster.Message){}}}, nil
			},
		}
		for _, mod := range mods {
			mod(&cfg)
		}
		c, err := cluster.Join(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	return join(), join()
}

// BenchmarkInvokeFollower is one Follower -> Leader -> Follower round trip, 64 bytes,
// over each transport.
func BenchmarkInvokeFollower(b *testing.B) {
	forEachBenchTransport(b, func(b *testing.B, tr cluster.Transport) {
		_, f := benchCluster(b, tr)
		req := cluster.Message{Data: make([]byte, 64)}
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := f.Invoke(ctx, "echo", req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkHandoverAfterARun is a Leader's Close, a graceful handover, right after its
// Follower's 150 ms run of calls: the Follower's connection then rests between calls,
// and the handover waits until the Follower has read its goodbye.
func BenchmarkHandoverAfterARun(b *testing.B) {
	forEachBenchTransport(b, func(b *testing.B, tr cluster.Transport) {
		req := cluster.Message{Data: make([]byte, 64)}
		ctx := context.Background()
		for range b.N {
			b.StopTimer()
			l, f := benchCluster(b, tr)
			for end := time.Now().Add(150 * time.Millisecond); time.Now().Before(end); {
				if _, err := f.Invoke(ctx, "echo", req); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkInvokeFollowerParallel is the Follower's throughput with many callers.
func BenchmarkInvokeFollowerParallel(b *testing.B) {
	forEachBenchTransport(b, func(b *testing.B, tr cluster.Transport) {
		_, f := benchCluster(b, tr)
		req := cluster.Message{Data: make([]byte, 64)}
		ctx := context.Background()
		b.ReportAllocs()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := f.Invoke(ctx, "echo", req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkInvokeLeaderLocal is the Leader's own call: straight to the Service.
func BenchmarkInvokeLeaderLocal(b *testing.B) {
	l, _ := benchCluster(b, cluster.TransportUnix)
	req := cluster.Message{Data: make([]byte, 64)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Invoke(ctx, "echo", req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPingPongFloor is the physical floor: a raw 64-byte round trip between two
// goroutines over a Unix socket and over loopback TCP, no framing, no library.
func BenchmarkPingPongFloor(b *testing.B) {
	b.Run("unix", func(b *testing.B) {
		dir, err := os.MkdirTemp("", "")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		ln, err := net.Listen("unix", filepath.Join(dir, "s"))
		if err != nil {
			b.Fatal(err)
		}
		pingPong(b, ln)
	})
	b.Run("tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		pingPong(b, ln)
	})
}

func pingPong(b *testing.B, ln net.Listener) {
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64)
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	wg.Wait()
}

// BenchmarkFailoverSIGKILL measures crash failover with real processes: a Leader and
// two Followers; SIGKILL the Leader; time until the new Leader serves (its role change)
// and until the other survivor follows it. Run with -benchtime=20x or more; the figures
// are reported as p50/p99/max metrics.
func BenchmarkFailoverSIGKILL(b *testing.B) {
	var leadTimes, followTimes []time.Duration
	for range b.N {
		tc := newTestCluster(b)
		ps := tc.startMembers(3)
		var leader *proc
		var rest []*proc
		for _, p := range ps {
			if p.joined().Role == "leader" {
				leader = p
			} else {
				rest = append(rest, p)
			}
		}
		if leader == nil {
			b.Fatal("no leader")
		}
		killedAt := time.Now()
		leader.Kill()
		var newLeader *proc
		var newTerm uint64
		for _, p := range rest {
			e := p.wait(func(e event) bool { return e.Ev == "role" && e.Term > 1 })
			if e.Role == "leader" {
				newLeader, newTerm = p, e.Term
				leadTimes = append(leadTimes, time.Unix(0, e.At).Sub(killedAt))
			}
		}
		for _, p := range rest {
			if p != newLeader {
				e := p.wait(func(e event) bool { return e.Ev == "role" && e.Role == "follower" && e.Term == newTerm })
				followTimes = append(followTimes, time.Unix(0, e.At).Sub(killedAt))
			}
		}
		for _, p := range rest {
			p.Kill()
		}
	}
	reportDurations(b, "lead", leadTimes)
	reportDurations(b, "follow", followTimes)
}

func reportDurations(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) float64 { return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) / 1000 }
	b.ReportMetric(at(0.5), name+"-p50-ms")
	b.ReportMetric(at(0.99), name+"-p99-ms")
	b.ReportMetric(at(1), name+"-max-ms")
}

// BenchmarkLargePayload is one Follower -> Leader -> Follower round trip of a 1, 16 and
// 64 MiB payload over a Unix socket: as a Blob (a sealed memfd passed both ways; the
// Leader's Service returns the request it was lent), and inline as Data. "blob-touch"
// also reads one byte of every page of the response, the least a receiver that uses
// the payload pays (page faults on the shared mapping).
func BenchmarkLargePayload(b *testing.B) {
	benchLargePayload(b, cluster.TransportUnix, []string{"blob", "blob-touch", "inline"}, []int{1 << 20, 16 << 20, 64 << 20})
}

// BenchmarkLargePayloadTCP is BenchmarkLargePayload over TCP, where a Blob cannot pass
// as a descriptor and travels inline: it should cost what the same bytes as Data do.
func BenchmarkLargePayloadTCP(b *testing.B) {
	benchLargePayload(b, cluster.TransportTCP, []string{"blob", "inline"}, []int{1 << 20, 16 << 20})
}

func benchLargePayload(b *testing.B, tr cluster.Transport, modes []string, sizes []int) {
	for _, mode := range modes {
		for _, size := range sizes {
			b.Run(fmt.Sprintf("%s/%dMiB", mode, size>>20), func(b *testing.B) {
				_, f := benchCluster(b, tr, func(c *cluster.Config) { c.MaxBody = size + 4096 })
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(i)
				}
				req := cluster.Message{Data: data}
				if mode != "inline" {
					bl, err := blob.New(data)
					if err != nil {
						b.Fatal(err)
					}
					defer bl.Close()
					req = cluster.Message{Blob: bl}
				}
				ctx := context.Background()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				var sink byte
				for b.Loop() {
					out, err := f.Invoke(ctx, "echo", req)
					if err != nil {
						b.Fatal(err)
					}
					got := out.Data
					if out.Blob != nil {
						got = out.Blob.Bytes()
					}
					if len(got) != size {
						b.Fatalf("response is %d bytes, want %d", len(got), size)
					}
					if mode == "blob-touch" {
						for i := 0; i < len(got); i += 4096 {
							sink += got[i]
						}
					}
					_ = out.Close()
				}
				_ = sink
			})
		}
	}
}

// BenchmarkRegisterWithManyHeld is one Register and its Withdraw by a Follower that
// already holds held registrations: their number must not change the cost. On a 2-core
// machine, Unix transport, 2000 operations: 65 µs with 10 held and 51 µs with 10 000;
// before the watermark (registrations.heldUpTo), when each Register walked and copied
// every earlier registration, 67 µs and 201 µs.
func BenchmarkRegisterWithManyHeld(b *testing.B) {
	for _, held := range []int{10, 10000} {
		b.Run(fmt.Sprint(held), func(b *testing.B) {
			_, f := benchCluster(b, cluster.TransportUnix, func(cfg *cluster.Config) {
				cfg.Limits.MaxRegistrations = held + 10
			})
			ctx := context.Background()
			for i := 0; i < held; i++ {
				if _, err := f.Register(ctx, "workers", cluster.Message{Data: []byte(fmt.Sprint(i))}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r, err := f.Register(ctx, "workers", cluster.Message{Data: []byte("x")})
				if err != nil {
					b.Fatal(err)
				}
				if err := r.Withdraw(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

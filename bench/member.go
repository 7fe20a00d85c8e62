package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/blob"
	"github.com/cluster-client-go/cluster/internal/member"
)

// memberConfig is the Config of every Go member of a run: its Service, when it leads,
// is internal/member's echo Service ("echo" returns the request, "whoami" the Leader's
// host name and pid, topics an in-memory broker), so that what is measured is the
// library, not a server.
func memberConfig(dir, transport string, port, heapMiB int) member.Config {
	cfg := member.Config{
		Name: "bench", Dir: dir, Port: port,
		MaxBody: 160 << 20, // the 64 MiB inline round trip
	}
	if transport == "tcp" {
		cfg.Transport = cluster.TransportTCP
	}
	return cfg.WithArgs(memberArgs{Heap: heapMiB})
}

// memberArgs are a Go member's settings besides its member.Config.
type memberArgs struct {
	Heap int // MiB to keep resident
}

// subStats collects what a subscriber received.
type subStats struct {
	mu          sync.Mutex
	lat         []int64
	first, last int64
}

func (s *subStats) record(stamp int64) {
	now := mono()
	s.mu.Lock()
	if len(s.lat) == 0 {
		s.first = now
	}
	s.last = now
	s.lat = append(s.lat, now-stamp)
	s.mu.Unlock()
}

func (s *subStats) count() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.lat))
}

func (s *subStats) take() response {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := response{Calls: int64(len(s.lat)), Lat: s.lat, First: s.first, Last: s.last}
	s.lat, s.first, s.last = nil, 0, 0
	return r
}

// stamped is a payload of size bytes (at least 8) starting with the time it was made.
func stamped(size int) []byte {
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, uint64(mono()))
	return b
}

// memberMain is a Go member: the internal/member program, driven with the agent
// requests as its operations (each answers a response).
func memberMain(cfg member.Config) int {
	var subs subStats
	var farm []*cluster.Client
	ops := map[string]func(c *cluster.Client, req request) response{
		"role": func(c *cluster.Client, _ request) response {
			return response{PID: os.Getpid(), Leader: c.Role().Role == cluster.RoleLeader}
		},
		"seq":  invokeSeq,
		"tput": invokeTput,
		"sub": func(c *cluster.Client, req request) response {
			_, err := c.Subscribe(context.Background(), req.Topic, func(m cluster.Message) {
				if len(m.Data) >= 8 {
					subs.record(int64(binary.BigEndian.Uint64(m.Data)))
				}
			})
			return errResponse(err)
		},
		"subcount": func(*cluster.Client, request) response { return response{Calls: subs.count()} },
		"substats": func(c *cluster.Client, _ request) response {
			r := subs.take()
			r.Heap = int64(c.Stats().Dropped)
			return r
		},
		"pub":   publish,
		"probe": probe,
		"blob":  blobTrips,
		"mem": func(c *cluster.Client, _ request) response {
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return response{Heap: int64(ms.HeapInuse + ms.StackInuse), Calls: int64(c.Stats().Followers)}
		},
		"farm": func(_ *cluster.Client, req request) response {
			fcfg, err := cfg.Cluster()
			if err != nil {
				return errResponse(err)
			}
			for range req.N {
				fc, err := cluster.Join(context.Background(), fcfg)
				if err != nil {
					return errResponse(err)
				}
				farm = append(farm, fc)
			}
			return response{Calls: int64(len(farm))}
		},
	}
	prog := member.Program{
		Setup: func(m *member.Member) error {
			var args memberArgs
			if err := m.Args(&args); err != nil {
				return err
			}
			holdHeap(args.Heap)
			return nil
		},
		Ops: map[string]member.Op{},
		Leave: func(m *member.Member) int {
			for _, fc := range farm {
				_ = fc.Close()
			}
			_ = m.Client().Close()
			return 0
		},
	}
	for name, op := range ops {
		prog.Ops[name] = func(_ context.Context, m *member.Member, cmd member.Command) (any, error) {
			var req request
			if err := json.Unmarshal(cmd.Args, &req); err != nil {
				return nil, fmt.Errorf("bad request: %w", err)
			}
			return op(m.Client(), req), nil
		}
	}
	return member.Main(cfg, prog)
}

func errResponse(err error) response {
	if err != nil {
		return response{Err: err.Error()}
	}
	return response{}
}

// deadline is when a measurement of ms milliseconds ends (none for 0).
func deadline(ms int) time.Time {
	if ms <= 0 {
		return time.Now().Add(time.Hour)
	}
	return time.Now().Add(time.Duration(ms) * time.Millisecond)
}

func invokeSeq(c *cluster.Client, req request) response {
	ctx := context.Background()
	msg := cluster.Message{Data: make([]byte, req.Size)}
	return sequential(req, func() error {
		_, err := c.Invoke(ctx, "echo", msg)
		return err
	})
}

func invokeTput(c *cluster.Client, req request) response {
	ctx := context.Background()
	return concurrent(req, func() func() error {
		msg := cluster.Message{Data: make([]byte, req.Size)}
		return func() error {
			_, err := c.Invoke(ctx, "echo", msg)
			return err
		}
	})
}

func publish(c *cluster.Client, req request) response {
	ctx := context.Background()
	t0 := mono()
	for i := range req.N {
		pace(t0, i, req.Interval)
		if err := c.Publish(ctx, req.Topic, cluster.Message{Data: stamped(req.Size)}); err != nil {
			return response{Err: err.Error()}
		}
	}
	return response{Calls: int64(req.N), Ns: mono() - t0}
}

// probe invokes whoami until a Leader other than oldpid answers, and returns when.
func probe(c *cluster.Client, req request) response {
	for tries := 0; ; tries++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := c.Invoke(ctx, "whoami", cluster.Message{})
		cancel()
		_, pid, _ := strings.Cut(string(out.Data), " ") // "host pid"
		switch {
		case err == nil && atoi(pid) != req.OldPID:
			return response{T: mono(), PID: atoi(pid)}
		case err != nil && !errors.Is(err, cluster.ErrLeaderLost) && tries > 1000:
			return response{Err: err.Error()}
		}
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// blobTrips is n echo round trips of a size-byte payload, as a Blob or inline Data.
func blobTrips(c *cluster.Client, req request) response {
	ctx := context.Background()
	data := make([]byte, req.Size)
	for i := range data {
		data[i] = byte(i)
	}
	msg := cluster.Message{Data: data}
	if req.Mode == "blob" {
		b, err := blob.New(data)
		if err != nil {
			return response{Err: err.Error()}
		}
		defer b.Close()
		msg = cluster.Message{Blob: b}
	}
	var lat []int64
	for range req.N {
		t0 := mono()
		out, err := c.Invoke(ctx, "echo", msg)
		if err != nil {
			return response{Err: err.Error()}
		}
		got := len(out.Data)
		if out.Blob != nil {
			got = out.Blob.Len()
		}
		_ = out.Close()
		lat = append(lat, mono()-t0)
		if got != req.Size {
			return response{Err: fmt.Sprintf("echo returned %d bytes, want %d", got, req.Size)}
		}
	}
	return response{Lat: lat}
}

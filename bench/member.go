package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/blob"
)

// echoService is the Service every Go member builds when it leads: "echo" returns the
// request, "whoami" the Leader's pid, and topics are an in-memory broker, so that what
// is measured is the library, not a server.
type echoService struct {
	mu   sync.Mutex
	subs map[string]map[int]func(cluster.Message)
	next int
}

func (s *echoService) Invoke(_ context.Context, method string, req cluster.Message) (cluster.Message, error) {
	switch method {
	case "echo":
		if req.Blob != nil {
			return req.Clone() // the request is lent: give back a Message of our own
		}
		return req, nil
	case "whoami":
		return cluster.Message{Data: strconv.AppendInt(nil, int64(os.Getpid()), 10)}, nil
	}
	return cluster.Message{}, fmt.Errorf("no method %q", method)
}

func (s *echoService) Subscribe(_ context.Context, topic string, emit func(cluster.Message)) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[topic] == nil {
		s.subs[topic] = map[int]func(cluster.Message){}
	}
	s.next++
	id := s.next
	s.subs[topic][id] = emit
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs[topic], id)
	}, nil
}

func (s *echoService) Publish(_ context.Context, topic string, msg cluster.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, emit := range s.subs[topic] {
		emit(cluster.Message{Data: msg.Data})
	}
	return nil
}

func (s *echoService) Close() error { return nil }

// memberConfig is the Config of every Go member of a run.
func memberConfig(dir, transport string, port int) cluster.Config {
	cfg := cluster.Config{
		Name: "bench", Dir: dir, Port: port,
		Logger:  slog.New(slog.DiscardHandler),
		MaxBody: 160 << 20, // the 64 MiB inline round trip
		NewService: func(context.Context) (cluster.Service, error) {
			return &echoService{subs: map[string]map[int]func(cluster.Message){}}, nil
		},
	}
	if transport == "tcp" {
		cfg.Transport = cluster.TransportTCP
	}
	return cfg
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

func memberMain(args []string) {
	fs := flag.NewFlagSet("member", flag.ExitOnError)
	dir := fs.String("dir", "", "cluster directory")
	transport := fs.String("transport", "unix", "unix or tcp")
	port := fs.Int("port", 0, "TCP port")
	heap := fs.Int("heap", 0, "MiB to keep resident")
	_ = fs.Parse(args)
	holdHeap(*heap)
	ctx := context.Background()
	c, err := cluster.Join(ctx, memberConfig(*dir, *transport, *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "member:", err)
		os.Exit(1)
	}
	var subs subStats
	var farm []*cluster.Client
	serveAgent(response{Leader: c.Role().Role == cluster.RoleLeader}, func(req request) response {
		switch req.Op {
		case "role":
			return response{PID: os.Getpid(), Leader: c.Role().Role == cluster.RoleLeader}
		case "seq":
			return invokeSeq(c, req)
		case "tput":
			return invokeTput(c, req)
		case "sub":
			_, err := c.Subscribe(ctx, req.Topic, func(m cluster.Message) {
				if len(m.Data) >= 8 {
					subs.record(int64(binary.BigEndian.Uint64(m.Data)))
				}
			})
			return errResponse(err)
		case "subcount":
			return response{Calls: subs.count()}
		case "substats":
			r := subs.take()
			r.Heap = int64(c.Stats().Dropped)
			return r
		case "pub":
			return publish(c, req)
		case "probe":
			return probe(c, req)
		case "blob":
			return blobTrips(c, req)
		case "mem":
			runtime.GC()
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return response{Heap: int64(ms.HeapInuse + ms.StackInuse), Calls: int64(c.Stats().Followers)}
		case "farm":
			for range req.N {
				fc, err := cluster.Join(ctx, memberConfig(*dir, *transport, *port))
				if err != nil {
					return errResponse(err)
				}
				farm = append(farm, fc)
			}
			return response{Calls: int64(len(farm))}
		}
		return response{Err: "unknown op " + req.Op}
	})
	for _, fc := range farm {
		_ = fc.Close()
	}
	_ = c.Close()
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
		if req.Interval > 0 {
			if wait := time.Duration(t0 + int64(i)*int64(req.Interval)*1000 - mono()); wait > 0 {
				time.Sleep(wait)
			}
		}
		if err := c.Publish(ctx, req.Topic, cluster.Message{Data: stamped(req.Size)}); err != nil {
			return response{Err: err.Error()}
		}
	}
	return response{Calls: int64(req.N), Ns: mono() - t0}
}

// probe invokes whoami until a Leader other than oldpid answers, and returns when.
func probe(c *cluster.Client, req request) response {
	old := strconv.Itoa(req.OldPID)
	for tries := 0; ; tries++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := c.Invoke(ctx, "whoami", cluster.Message{})
		cancel()
		switch {
		case err == nil && string(out.Data) != old:
			return response{T: mono(), PID: atoi(string(out.Data))}
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

package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The floor: the same work done with raw sockets between processes and no library
// at all. The server echoes whatever an 'E' connection sends (so one program serves
// ping-pong, pipelining and large round trips) and writes published messages to every
// 'S' connection; the client measures.

func floorServerMain(args []string) {
	fs := flag.NewFlagSet("floor-server", flag.ExitOnError)
	network := fs.String("net", "unix", "unix or tcp")
	addr := fs.String("addr", "", "address to listen on")
	_ = fs.Parse(args)
	ln, err := net.Listen(*network, *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor-server:", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	var subs []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				var kind [1]byte
				if _, err := io.ReadFull(c, kind[:]); err != nil {
					c.Close()
					return
				}
				switch kind[0] {
				case 'S':
					mu.Lock()
					subs = append(subs, c)
					mu.Unlock()
					return
				case 'M': // echo message by message: one read and one write each
					var size [4]byte
					if _, err := io.ReadFull(c, size[:]); err != nil {
						c.Close()
						return
					}
					msg := make([]byte, binary.BigEndian.Uint32(size[:]))
					for {
						if _, err := io.ReadFull(c, msg); err != nil {
							break
						}
						if _, err := c.Write(msg); err != nil {
							break
						}
					}
					c.Close()
					return
				}
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				c.Close()
			}()
		}
	}()
	serveAgent(func(req request) response {
		switch req.Op {
		case "pub":
			mu.Lock()
			to := append([]net.Conn(nil), subs...)
			mu.Unlock()
			t0 := mono()
			for i := range req.N {
				pace(t0, i, req.Interval)
				msg := stamped(req.Size)
				for _, c := range to {
					if _, err := c.Write(msg); err != nil {
						return response{Err: err.Error()}
					}
				}
			}
			return response{Calls: int64(req.N), Ns: mono() - t0}
		}
		return response{Err: "unknown op " + req.Op}
	})
	ln.Close()
}

func floorClientMain(args []string) {
	fs := flag.NewFlagSet("floor-client", flag.ExitOnError)
	network := fs.String("net", "unix", "unix or tcp")
	addr := fs.String("addr", "", "the floor server's address")
	_ = fs.Parse(args)
	dial := func(kind byte) (net.Conn, error) {
		c, err := net.Dial(*network, *addr)
		if err != nil {
			return nil, err
		}
		if _, err := c.Write([]byte{kind}); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	echo, err := dial('E')
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor-client:", err)
		os.Exit(1)
	}
	var subs subStats
	serveAgent(func(req request) response {
		switch req.Op {
		case "seq":
			buf := make([]byte, req.Size)
			return sequential(req, func() error {
				if _, err := echo.Write(buf); err != nil {
					return err
				}
				_, err := io.ReadFull(echo, buf)
				return err
			})
		case "tput":
			if req.Mode == "batched" {
				return pipelined(echo, req)
			}
			c, err := dial('M')
			if err != nil {
				return response{Err: err.Error()}
			}
			defer c.Close()
			return pipelinedPerMessage(c, req)
		case "big":
			return bigTrips(echo, req)
		case "sub":
			c, err := dial('S')
			if err != nil {
				return response{Err: err.Error()}
			}
			go func() {
				msg := make([]byte, req.Size)
				for {
					if _, err := io.ReadFull(c, msg); err != nil {
						return
					}
					subs.record(int64(binary.BigEndian.Uint64(msg)))
				}
			}()
			return response{}
		case "subcount":
			return response{Calls: subs.count()}
		case "substats":
			return subs.take()
		}
		return response{Err: "unknown op " + req.Op}
	})
}

// pipelined keeps req.Conc requests of req.Size bytes in flight on c for req.Ms
// milliseconds, writing as many as there are free slots in one write and reading
// whatever has come back: the best one connection can do.
func pipelined(c net.Conn, req request) response {
	out := make([]byte, req.Conc*req.Size)
	in := make([]byte, 64<<10)
	var calls int64
	outstanding, partial := 0, 0
	t0 := mono()
	end := time.Now().Add(time.Duration(req.Ms) * time.Millisecond)
	for {
		more := time.Now().Before(end)
		if more && outstanding < req.Conc {
			if _, err := c.Write(out[:(req.Conc-outstanding)*req.Size]); err != nil {
				return response{Err: err.Error()}
			}
			outstanding = req.Conc
		}
		if !more && outstanding == 0 {
			break
		}
		n, err := c.Read(in)
		if err != nil {
			return response{Err: err.Error()}
		}
		partial += n
		done := partial / req.Size
		partial %= req.Size
		outstanding -= done
		calls += int64(done)
	}
	return response{Calls: calls, Ns: mono() - t0}
}

// pipelinedPerMessage keeps req.Conc requests in flight on c (an 'M' connection) for
// req.Ms milliseconds, one write per request and one read per response: what
// pipelining costs without batching, the I/O pattern of a library that writes every
// message as it comes.
func pipelinedPerMessage(c net.Conn, req request) response {
	var size [4]byte
	binary.BigEndian.PutUint32(size[:], uint32(req.Size))
	if _, err := c.Write(size[:]); err != nil {
		return response{Err: err.Error()}
	}
	sent := make(chan struct{}, req.Conc) // one token per request whose response is unread
	werr := make(chan error, 1)
	t0 := mono()
	end := time.Now().Add(time.Duration(req.Ms) * time.Millisecond)
	go func() {
		defer close(sent)
		msg := make([]byte, req.Size)
		for time.Now().Before(end) {
			sent <- struct{}{}
			if _, err := c.Write(msg); err != nil {
				werr <- err
				return
			}
		}
	}()
	var calls int64
	msg := make([]byte, req.Size)
	for range sent {
		if _, err := io.ReadFull(c, msg); err != nil {
			return response{Err: err.Error()}
		}
		calls++
	}
	select {
	case err := <-werr:
		return response{Err: err.Error()}
	default:
	}
	return response{Calls: calls, Ns: mono() - t0}
}

// bigTrips is req.N round trips of req.Size bytes through the echo server.
func bigTrips(c net.Conn, req request) response {
	out := make([]byte, req.Size)
	in := make([]byte, req.Size)
	var lat []int64
	for range req.N {
		t0 := mono()
		werr := make(chan error, 1)
		go func() { _, err := c.Write(out); werr <- err }()
		if _, err := io.ReadFull(c, in); err != nil {
			return response{Err: err.Error()}
		}
		if err := <-werr; err != nil {
			return response{Err: err.Error()}
		}
		lat = append(lat, mono()-t0)
	}
	return response{Lat: lat}
}

// lockHolderMain holds an exclusive flock on a file until it is killed: the floor of
// failover is how soon after its SIGKILL another process can take the lock.
func lockHolderMain(args []string) {
	fs := flag.NewFlagSet("lock-holder", flag.ExitOnError)
	path := fs.String("path", "", "lock file")
	heap := fs.Int("heap", 0, "MiB to keep resident")
	_ = fs.Parse(args)
	holdHeap(*heap)
	f, err := os.OpenFile(*path, os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lock-holder:", err)
		os.Exit(1)
	}
	serveAgent(func(req request) response { return response{Err: "unknown op " + req.Op} })
}

// pace sleeps until the i-th of a series of messages started at t0 (mono) is due, one
// every intervalUs microseconds; with no interval it returns at once.
func pace(t0 int64, i, intervalUs int) {
	if intervalUs <= 0 {
		return
	}
	if wait := time.Duration(t0 + int64(i)*int64(intervalUs)*1000 - mono()); wait > 0 {
		time.Sleep(wait)
	}
}

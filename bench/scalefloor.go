package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The floor of the scaling measurement: the work of a failover done with raw sockets
// and the best waiting there is, no library. A standby server waits for the lock in a
// blocking flock(2) (the kernel hands the lock over the moment the holder dies), then
// listens (a Unix socket is bound under a staging name and renamed into place) and
// opens a gate: a second lock file it held exclusively while it waited, on which the
// clients that lost their server wait in a blocking shared flock(2), so that the
// kernel wakes them all the moment the next server listens (inotify would do as well,
// but a user has only 128 instances). Then each connects and makes two round trips of
// a hello's size (a handshake, then the call). After that the server can fan a message
// out to every client it accepted.

// floorMsg is the size of every message of the scaling floor: about a hello's.
const floorMsg = 64

// scaleServerMain is the "scale-server" agent: a standby that leads once it has the
// flock on -lock.
func scaleServerMain(args []string) {
	fs := flag.NewFlagSet("scale-server", flag.ExitOnError)
	lockPath := fs.String("lock", "", "lock file")
	gatePath := fs.String("gate", "", "gate file: held exclusively until this server listens")
	network := fs.String("net", "unix", "unix or tcp")
	addr := fs.String("addr", "", "socket path, or 127.0.0.1:port")
	_ = fs.Parse(args)
	lf, err := os.OpenFile(*lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	var gate *os.File
	if err == nil {
		gate, err = os.OpenFile(*gatePath, os.O_RDWR|os.O_CREATE, 0o600)
	}
	if err == nil {
		err = unix.Flock(int(gate.Fd()), unix.LOCK_EX) // free: the serving server opened it
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale-server:", err)
		os.Exit(1)
	}
	var leading atomic.Bool
	var mu sync.Mutex
	var subs []net.Conn
	go func() {
		if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
			fmt.Fprintln(os.Stderr, "scale-server: flock:", err)
			os.Exit(1)
		}
		ln, err := floorListen(*network, *addr)
		if err == nil {
			err = unix.Flock(int(gate.Fd()), unix.LOCK_UN)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "scale-server:", err)
			os.Exit(1)
		}
		leading.Store(true)
		pid := make([]byte, floorMsg)
		binary.BigEndian.PutUint64(pid, uint64(os.Getpid()))
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, floorMsg)
				for i := range 2 { // the handshake, then the call
					if _, err := io.ReadFull(c, buf); err != nil {
						c.Close()
						return
					}
					out := buf
					if i == 0 {
						out = pid
					}
					if _, err := c.Write(out); err != nil {
						c.Close()
						return
					}
				}
				mu.Lock()
				subs = append(subs, c)
				mu.Unlock()
			}()
		}
	}()
	serveAgent(func(req request) response {
		switch req.Op {
		case "role":
			return response{PID: os.Getpid(), Leader: leading.Load()}
		case "pub":
			mu.Lock()
			to := append([]net.Conn(nil), subs...)
			mu.Unlock()
			t0 := mono()
			for i := range req.N {
				pace(t0, i, req.Interval)
				msg := stamped(floorMsg)
				for _, c := range to {
					_, _ = c.Write(msg) // a client gone is not the server's failure
				}
			}
			return response{Calls: int64(req.N), Ns: mono() - t0}
		}
		return response{Err: "unknown op " + req.Op}
	})
}

// floorListen listens on addr; a Unix socket is bound under a staging name and
// renamed into place, as a Leader does.
func floorListen(network, addr string) (net.Listener, error) {
	if network != "unix" {
		return net.Listen(network, addr)
	}
	staging := addr + "~"
	_ = os.Remove(staging)
	ln, err := net.Listen("unix", staging)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Rename(staging, addr); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
}

// floorConn is a scaling floor client's current connection: the server's pid and when
// the call on it was answered.
type floorConn struct {
	mu   sync.Mutex
	cond *sync.Cond
	pid  int
	t    int64
}

// scaleClientMain is the "scale-client" agent: it connects, and after its server dies
// it waits at the gate for the next one, connects and makes the same two round trips.
func scaleClientMain(args []string) {
	fs := flag.NewFlagSet("scale-client", flag.ExitOnError)
	network := fs.String("net", "unix", "unix or tcp")
	addr := fs.String("addr", "", "socket path, or 127.0.0.1:port")
	gatePath := fs.String("gate", "", "the gate file a standby server holds until it listens")
	_ = fs.Parse(args)
	gate, err := os.OpenFile(*gatePath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale-client:", err)
		os.Exit(1)
	}
	cur := &floorConn{}
	cur.cond = sync.NewCond(&cur.mu)
	var subs subStats
	var connect func(first bool)
	connect = func(first bool) {
		for {
			if !first { // wait until a standby server listens
				if err := unix.Flock(int(gate.Fd()), unix.LOCK_SH); err == nil {
					_ = unix.Flock(int(gate.Fd()), unix.LOCK_UN)
				}
			}
			c, pid, err := floorHello(*network, *addr)
			if err != nil {
				time.Sleep(time.Millisecond)
				continue
			}
			t := mono()
			cur.mu.Lock()
			cur.pid, cur.t = pid, t
			cur.cond.Broadcast()
			cur.mu.Unlock()
			go func() {
				msg := make([]byte, floorMsg)
				for {
					if _, err := io.ReadFull(c, msg); err != nil {
						c.Close()
						connect(false)
						return
					}
					subs.record(int64(binary.BigEndian.Uint64(msg)))
				}
			}()
			return
		}
	}
	connect(true)
	serveAgent(func(req request) response {
		switch req.Op {
		case "probe": // until a server other than req.OldPID has answered the call
			cur.mu.Lock()
			defer cur.mu.Unlock()
			for cur.pid == req.OldPID || cur.pid == 0 {
				cur.cond.Wait()
			}
			return response{T: cur.t, PID: cur.pid}
		case "subcount":
			return response{Calls: subs.count()}
		case "substats":
			return subs.take()
		}
		return response{Err: "unknown op " + req.Op}
	})
}

// floorHello connects and makes the two round trips: the handshake (whose answer
// carries the server's pid) and the call.
func floorHello(network, addr string) (net.Conn, int, error) {
	c, err := net.Dial(network, addr)
	if err != nil {
		return nil, 0, err
	}
	buf := make([]byte, floorMsg)
	pid := 0
	for i := range 2 {
		if _, err := c.Write(buf); err == nil {
			_, err = io.ReadFull(c, buf)
		}
		if err != nil {
			c.Close()
			return nil, 0, err
		}
		if i == 0 {
			pid = int(binary.BigEndian.Uint64(buf))
		}
	}
	return c, pid, nil
}

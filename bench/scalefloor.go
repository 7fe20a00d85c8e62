package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The floor of the scaling measurement: the work of a failover done with raw sockets
// and the best waiting there is, no library. A standby server waits for the flock in a
// blocking flock(2) (the kernel hands the lock over the moment the holder dies), then
// listens and publishes that it does by renaming a file into place (the Unix socket
// itself; a marker file beside the TCP port); clients that lost their server wait for
// that rename with inotify, connect, and do two round trips of a hello's size (a
// handshake, then the call). After that the server can fan a message out to every
// client it accepted.

// floorMsg is the size of every message of the scaling floor: about a hello's.
const floorMsg = 64

// scaleServerMain is the "scale-server" agent: a standby that leads once it has the
// flock on -lock.
func scaleServerMain(args []string) {
	fs := flag.NewFlagSet("scale-server", flag.ExitOnError)
	lockPath := fs.String("lock", "", "lock file")
	network := fs.String("net", "unix", "unix or tcp")
	addr := fs.String("addr", "", "socket path, or 127.0.0.1:port")
	marker := fs.String("marker", "", "the file renamed into place once listening (tcp; unix: the socket)")
	_ = fs.Parse(args)
	lf, err := os.OpenFile(*lockPath, os.O_RDWR|os.O_CREATE, 0o600)
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
		ln, err := floorListen(*network, *addr, *marker)
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
	serveAgent(response{}, func(req request) response {
		switch req.Op {
		case "role":
			return response{PID: os.Getpid(), Leader: leading.Load()}
		case "pub":
			mu.Lock()
			to := append([]net.Conn(nil), subs...)
			mu.Unlock()
			t0 := mono()
			for i := range req.N {
				if req.Interval > 0 {
					if wait := time.Duration(t0 + int64(i)*int64(req.Interval)*1000 - mono()); wait > 0 {
						time.Sleep(wait)
					}
				}
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

// floorListen listens on addr and then makes that known the way a Leader does: a Unix
// socket is bound under a staging name and renamed into place, a TCP listener is
// followed by the rename of a marker file.
func floorListen(network, addr, marker string) (net.Listener, error) {
	if network == "unix" {
		staging := addr + "~"
		_ = os.Remove(staging)
		ln, err := net.Listen("unix", staging)
		if err != nil {
			return nil, err
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		return ln, os.Rename(staging, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	tmp := marker + "~"
	if err := os.WriteFile(tmp, []byte(fmt.Sprint(os.Getpid())), 0o600); err != nil {
		return nil, err
	}
	return ln, os.Rename(tmp, marker)
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
// it waits for the next one (inotify), connects and makes the same two round trips.
func scaleClientMain(args []string) {
	fs := flag.NewFlagSet("scale-client", flag.ExitOnError)
	network := fs.String("net", "unix", "unix or tcp")
	addr := fs.String("addr", "", "socket path, or 127.0.0.1:port")
	marker := fs.String("marker", "", "the file renamed into place once a server listens")
	_ = fs.Parse(args)
	w, err := newRenameWatch(filepath.Dir(*marker), filepath.Base(*marker))
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale-client:", err)
		os.Exit(1)
	}
	cur := &floorConn{}
	cur.cond = sync.NewCond(&cur.mu)
	var subs subStats
	var connect func(lastIno uint64)
	connect = func(lastIno uint64) {
		for {
			ino := fileIno(*marker)
			if ino != 0 && ino != lastIno {
				c, pid, err := floorHello(*network, *addr)
				if err == nil {
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
								connect(ino)
								return
							}
							subs.record(int64(binary.BigEndian.Uint64(msg)))
						}
					}()
					return
				}
				lastIno = ino // a dead server's: wait for the next
			}
			w.wait()
		}
	}
	connect(0)
	serveAgent(response{}, func(req request) response {
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

// fileIno is the inode number of path, or 0.
func fileIno(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return uint64(st.Ino)
}

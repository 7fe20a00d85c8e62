package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// redisServer is a private redis-server on a free loopback port, with no persistence
// and its files in a temporary directory (the same settings as the tests of
// examples/redis).
type redisServer struct {
	addr   string
	cmd    *exec.Cmd
	dir    string
	out    bytes.Buffer
	exited chan struct{}
}

// errNoRedis is returned by startRedis when redis-server is not installed.
var errNoRedis = errors.New("redis-server is not installed (Debian/Ubuntu: apt-get install -y redis-server)")

// startRedis starts redis-server and waits until it answers PING; it retries with
// another port should one found free be taken before redis-server binds it.
func startRedis() (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errNoRedis
	}
	var last error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := runRedis(bin, port)
		if err == nil {
			return s, nil
		}
		last = err
	}
	return nil, last
}

func runRedis(bin string, port int) (*redisServer, error) {
	dir, err := os.MkdirTemp("", "redis")
	if err != nil {
		return nil, err
	}
	s := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", "--logfile", "",
		"--maxclients", "10000")
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("redis-server on port %d exited at start: %s", port, bytes.TrimSpace(s.out.Bytes()))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis-server on port %d did not accept a connection within 30 s: %v", port, err)
		}
	}
}

// stop ends redis-server (SIGTERM, then SIGKILL after 10 s) and removes its directory.
func (s *redisServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}

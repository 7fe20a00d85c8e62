package cluster_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/internal/member"
)

// attackMain is a hostile peer (the "attack" role): it connects to the Leader's socket
// args.Sock as cluster cfg.Name and does what args.Attack says, N times, until its stdin
// closes; then it closes everything and exits. Every 100 ms, and once at the end, it
// prints a report (event "attack", Data: an attackReport as JSON).
//
//	handshake-idle  N connections that never send a hello, each redialled when closed
//	idle            N connections that complete the handshake and then send nothing
//	partial         N connections that complete the handshake, then send an invoke
//	                header for a body of Body bytes and only Sent of them
//	fds             the same, passing 16 descriptors with the frame's first bytes
//	subscribe       one connection that subscribes to N topics, without waiting
//	register        one connection that registers N payloads, without waiting
func attackMain(cfg member.Config, args memberArgs) int {
	if args.Attack == nil {
		fmt.Fprintln(os.Stderr, "the attack role needs Args.Attack")
		return 2
	}
	mode, n := args.Attack.Mode, args.Attack.N
	a := &attacker{sock: args.Sock, name: cfg.Name, rep: attackReport{Codes: map[string]int{}}}
	a.body, a.sent = args.Attack.Body, args.Attack.Sent
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	var wg sync.WaitGroup
	switch mode {
	case "handshake-idle":
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); a.redialIdle(stop) }()
		}
	case "idle", "partial", "fds":
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); a.hold(mode, stop) }()
		}
	case "subscribe", "register":
		wg.Add(1)
		go func() { defer wg.Done(); a.flood(mode, n, stop) }()
	default:
		fmt.Fprintf(os.Stderr, "unknown attack %q\n", mode)
		return 2
	}
	enc := json.NewEncoder(os.Stdout)
	report := func() {
		b := a.report()
		_ = enc.Encode(event{Ev: "attack", Data: string(b)})
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-t.C:
			report()
		case <-stop:
			done = true
		}
	}
	a.closeAll()
	wg.Wait()
	report()
	return 0
}

// attackReport is what an attacker saw.
type attackReport struct {
	Dialed   int            // connections opened
	Welcomed int            // of them, welcomed by the Leader
	Refused  int            // of them, refused with an error frame instead of a welcome
	Closed   int            // connections the Leader closed after welcoming them
	Answered int            // requests answered with a response
	Codes    map[string]int // error frames received, by code
	Errors   int            // dials, handshakes or writes that failed
	Said     []string       // the first few distinct messages of those error frames
	Failed   []string       // the first few distinct errors of those that failed
}

// failed records an error of a dial, a handshake or a write. Call it with a.mu held.
func (r *attackReport) failed(where string, err error) {
	r.Errors++
	msg := where + ": " + err.Error()
	if len(r.Failed) < 10 && !slices.Contains(r.Failed, msg) {
		r.Failed = append(r.Failed, msg)
	}
}

// heard records an error frame. Call it with a.mu held.
func (r *attackReport) heard(f frame.Frame) {
	r.Codes[string(f.Meta)]++
	msg := string(f.Body)
	if len(r.Said) < 10 && !slices.Contains(r.Said, msg) {
		r.Said = append(r.Said, msg)
	}
}

type attacker struct {
	sock, name string
	body, sent int

	mu    sync.Mutex
	rep   attackReport
	conns []net.Conn
}

func (a *attacker) count(f func(r *attackReport)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(&a.rep)
}

func (a *attacker) report() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, _ := json.Marshal(a.rep)
	return b
}

func (a *attacker) dial() (net.Conn, error) {
	c, err := net.Dial("unix", a.sock)
	if err != nil {
		a.count(func(r *attackReport) { r.failed("dial", err) })
		return nil, err
	}
	a.mu.Lock()
	a.rep.Dialed++
	a.conns = append(a.conns, c)
	a.mu.Unlock()
	return c, nil
}

func (a *attacker) closeAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.conns {
		_ = c.Close()
	}
}

// handshake sends a hello and reads the answer: true if welcomed.
func (a *attacker) handshake(c net.Conn, br *bufio.Reader) bool {
	// A Leader that refuses may answer and close before the hello is written: its
	// answer is still there to read.
	_, _ = c.Write(hello(a.name))
	f, err := frame.Read(br, frame.Limits{})
	switch {
	case err != nil:
		a.count(func(r *attackReport) { r.failed("handshake", err) })
		return false
	case f.Kind == frame.KindError:
		a.count(func(r *attackReport) { r.Refused++; r.heard(f) })
		return false
	}
	a.count(func(r *attackReport) { r.Welcomed++ })
	return true
}

// readAll reads what the Leader sends until it closes the connection, counting answers
// and error frames.
func (a *attacker) readAll(br *bufio.Reader) {
	for {
		f, err := frame.Read(br, frame.Limits{})
		if err != nil {
			return
		}
		switch f.Kind {
		case frame.KindResponse:
			a.count(func(r *attackReport) { r.Answered++ })
		case frame.KindError:
			a.count(func(r *attackReport) { r.heard(f) })
		}
	}
}

func stopped(stop chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

func (a *attacker) redialIdle(stop chan struct{}) {
	for !stopped(stop) {
		c, err := a.dial()
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		br := bufio.NewReader(c)
		if f, err := frame.Read(br, frame.Limits{}); err == nil && f.Kind == frame.KindError {
			a.count(func(r *attackReport) { r.Refused++; r.heard(f) })
		} else {
			a.count(func(r *attackReport) { r.Closed++ })
		}
		_ = c.Close()
	}
}

func (a *attacker) hold(mode string, stop chan struct{}) {
	c, err := a.dial()
	if err != nil {
		return
	}
	br := bufio.NewReader(c)
	if !a.handshake(c, br) {
		return
	}
	if mode != "idle" {
		h := frame.Header{Version: frame.Version, Kind: frame.KindInvoke, ID: 1, MetaLen: 4, BodyLen: uint32(a.body)}
		if mode == "fds" {
			h.FDs = frame.MaxFDs
		}
		b := make([]byte, frame.HeaderSize+4+a.sent)
		h.Put(b)
		copy(b[frame.HeaderSize:], "echo")
		if mode == "fds" {
			err = writeWithDevNulls(c, b, frame.MaxFDs)
		} else {
			_, err = c.Write(b)
		}
		if err != nil {
			a.count(func(r *attackReport) { r.failed("write", err) })
		}
	}
	a.readAll(br)
	if !stopped(stop) {
		a.count(func(r *attackReport) { r.Closed++ })
	}
}

func (a *attacker) flood(mode string, n int, stop chan struct{}) {
	c, err := a.dial()
	if err != nil {
		return
	}
	br := bufio.NewReader(c)
	if !a.handshake(c, br) {
		return
	}
	go a.readAll(br)
	w := bufio.NewWriter(c)
	for i := 1; i <= n && !stopped(stop); i++ {
		topic := []byte(fmt.Sprintf("topic-%d", i))
		var fr []byte
		if mode == "subscribe" {
			fr = frame.AppendFrame(nil, frame.Header{Kind: frame.KindSubscribe, ID: uint64(i)}, topic, nil)
		} else {
			fr = frame.AppendFrame(nil, frame.Header{Kind: frame.KindRegister, ID: uint64(i)}, []byte("workers"), frame.AppendRegister(nil, uint64(i), topic))
		}
		if _, err := w.Write(fr); err != nil {
			a.count(func(r *attackReport) { r.failed("write", err) })
			return
		}
	}
	_ = w.Flush()
}

// writeWithDevNulls writes b in one sendmsg that passes n descriptors of /dev/null.
func writeWithDevNulls(c net.Conn, b []byte, n int) error {
	fds := make([]int, n)
	for i := range fds {
		fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		fds[i] = fd
		defer unix.Close(fd)
	}
	rc, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Write(func(s uintptr) bool {
		_, serr = unix.SendmsgN(int(s), b, unix.UnixRights(fds...), nil, 0)
		return !errors.Is(serr, unix.EAGAIN)
	}); err != nil {
		return err
	}
	return serr
}

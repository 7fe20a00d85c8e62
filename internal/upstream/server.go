package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// writeTimeout bounds one write to a client: a client that stops reading for that long
// is disconnected, so that Push and Close never hang on it.
const writeTimeout = 10 * time.Second

// Server is the upstream server: it counts its connections, answers invokes and
// delivers messages to the connections subscribed to their topic. Its methods are safe
// for concurrent use.
type Server struct {
	ln      net.Listener
	done    chan struct{} // closed by Close
	wg      sync.WaitGroup
	judging sync.WaitGroup // judge goroutines still waiting out their grace

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change of conns or subscriptions
	conns    map[*serverConn]struct{}
	maxConns int
	total    int
	inflight int
	counter  int
	closed   bool
	overlap  string // the live connections when more than one were first seen at once
}

// serverConn is one client connection on the server.
type serverConn struct {
	id     int // 1 for the first connection accepted, and so on
	c      net.Conn
	ctx    context.Context // ends when the connection does
	cancel context.CancelFunc
	wmu    sync.Mutex          // serialises writes
	subs   map[string]struct{} // guarded by Server.mu
	// regs is what this connection published and did not withdraw: like a registry's
	// ephemeral entries, they live as long as the connection. Guarded by Server.mu.
	regs []entry
}

// entry is one published payload on a topic.
type entry struct {
	topic string
	data  string
}

// Start listens on addr ("127.0.0.1:0" picks a free port) with network "tcp" and serves
// until Close.
func Start(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		ln:      ln,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
		conns:   map[*serverConn]struct{}{},
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr returns the host:port the server actually listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// notifyLocked wakes WaitSubscribers. s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) accept() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			// A transient failure (out of descriptors, say): retry, backing off.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t := time.NewTimer(backoff)
			select {
			case <-s.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = 0
		ctx, cancel := context.WithCancel(context.Background())
		sc := &serverConn{c: c, ctx: ctx, cancel: cancel, subs: map[string]struct{}{}}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			cancel()
			c.Close()
			return
		}
		s.conns[sc] = struct{}{}
		s.total++
		sc.id = s.total
		s.maxConns = max(s.maxConns, 1)
		if len(s.conns) > 1 {
			// The older connections are usually a client that just died: its FIN may
			// still be on its way through loopback. Judge them after a grace period.
			s.wg.Add(1)
			s.judging.Add(1)
			go s.judge(sc)
		}
		s.notifyLocked()
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(sc)
	}
}

// serve reads sc's packets until it breaks, then closes it and waits for its invokes.
func (s *Server) serve(sc *serverConn) {
	defer s.wg.Done()
	var calls sync.WaitGroup
	defer func() {
		sc.cancel() // ends running sleeps
		sc.c.Close()
		s.mu.Lock()
		delete(s.conns, sc)
		s.notifyLocked()
		s.mu.Unlock()
		calls.Wait()
	}()
	br := bufio.NewReader(sc.c)
	for {
		p, err := decode(br)
		if err != nil {
			return
		}
		switch p.Op {
		case opInvoke:
			calls.Add(1)
			go func() {
				defer calls.Done()
				data, err := s.invoke(sc.ctx, p.Method, p.Data)
				sc.reply(p.ID, data, err)
			}()
		case opSubscribe, opUnsubscribe:
			s.mu.Lock()
			if p.Op == opSubscribe {
				sc.subs[p.Topic] = struct{}{}
			} else {
				delete(sc.subs, p.Topic)
			}
			s.notifyLocked()
			s.mu.Unlock()
			sc.reply(p.ID, nil, nil)
		case opPublish:
			s.mu.Lock()
			sc.regs = append(sc.regs, entry{p.Topic, string(p.Data)})
			s.notifyLocked()
			s.mu.Unlock()
			s.Push(p.Topic, p.Data)
			sc.reply(p.ID, nil, nil)
		case opWithdraw:
			s.mu.Lock()
			i := slices.Index(sc.regs, entry{p.Topic, string(p.Data)})
			if i >= 0 {
				sc.regs = slices.Delete(sc.regs, i, i+1)
				s.notifyLocked()
			}
			s.mu.Unlock()
			var err error
			if i < 0 {
				err = fmt.Errorf("withdraw: %q was not published on %q by this connection", p.Data, p.Topic)
			}
			sc.reply(p.ID, nil, err)
		default:
			sc.reply(p.ID, nil, fmt.Errorf("unknown operation %q", p.Op))
		}
	}
}

// reply sends the response to request id; a request without an id gets none.
func (sc *serverConn) reply(id uint64, data []byte, err error) {
	if id == 0 {
		return
	}
	r := packet{Op: opResponse, ID: id, Data: data}
	if err != nil {
		r.Err = err.Error()
	}
	b, err := encode(r)
	if err != nil {
		b, _ = encode(packet{Op: opResponse, ID: id, Err: err.Error()})
	}
	_ = sc.write(b)
}

// write sends one framed packet. A failed write closes the connection: its framing
// may be broken, and its reader then ends.
func (sc *serverConn) write(b []byte) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	_ = sc.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := sc.c.Write(b); err != nil {
		sc.c.Close()
		return err
	}
	return nil
}

func (s *Server) invoke(ctx context.Context, method string, data []byte) ([]byte, error) {
	switch method {
	case "echo":
		return data, nil
	case "conns":
		return []byte(strconv.Itoa(s.Conns())), nil
	case "incr":
		s.mu.Lock()
		s.counter++
		n := s.counter
		s.mu.Unlock()
		return []byte(strconv.Itoa(n)), nil
	case "sleep":
		d, err := time.ParseDuration(string(data))
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.inflight++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inflight--
			s.mu.Unlock()
		}()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return []byte("ok"), nil
		case <-ctx.Done():
			return nil, errors.New("connection closed")
		}
	case "fail":
		return nil, errors.New("failed on purpose: " + string(data))
	}
	return nil, fmt.Errorf("unknown method %s", method)
}

// Conns returns the number of connections open right now.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// overlapGrace is how long an older connection may stay open beside a newer one before
// the two count as live at once: a client killed a moment before its successor
// connected has closed its end, but the FIN can trail the successor's SYN through
// loopback on a loaded machine.
const overlapGrace = time.Second

// judge counts, after overlapGrace, the connections that were open when newer was
// accepted and are still open with their peer's end not closed.
func (s *Server) judge(newer *serverConn) {
	defer s.wg.Done()
	defer s.judging.Done()
	t := time.NewTimer(overlapGrace)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.done:
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	live := 0
	for sc := range s.conns {
		if sc.id <= newer.id && !peerClosed(sc.c) {
			live++
		}
	}
	if live > s.maxConns {
		s.maxConns = live
		if live > 1 && s.overlap == "" {
			s.overlap = fmt.Sprintf("%s open %v after #%d connected", s.describeLocked(), overlapGrace, newer.id)
		}
	}
}

// describeLocked lists the connections with their numbers and peers' addresses.
func (s *Server) describeLocked() string {
	var parts []string
	for sc := range s.conns {
		parts = append(parts, fmt.Sprintf("#%d from %s (peer closed: %v)", sc.id, sc.c.RemoteAddr(), peerClosed(sc.c)))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// Overlap describes the connections that were live at once when MaxConns first went
// above 1, or "" if it never did.
func (s *Server) Overlap() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overlap
}

// Judged waits until every connection accepted so far has been judged (see MaxConns):
// call it before a final MaxConns.
func (s *Server) Judged() { s.judging.Wait() }

// MaxConns returns the most connections that were ever live at once: an older
// connection counts beside a newer one if it was still open, with its peer's end open,
// overlapGrace after the newer one connected.
func (s *Server) MaxConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxConns
}

// TotalConns returns the number of connections accepted since Start.
func (s *Server) TotalConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Inflight returns the number of "sleep" invokes running right now, so that a test can
// tell that a call has reached the server.
func (s *Server) Inflight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight
}

// Registered returns, sorted, the payloads published on topic and not withdrawn, over
// every live connection: what a registry with ephemeral entries would list.
func (s *Server) Registered(topic string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registeredLocked(topic)
}

func (s *Server) registeredLocked(topic string) []string {
	out := []string{}
	for sc := range s.conns {
		for _, e := range sc.regs {
			if e.topic == topic {
				out = append(out, e.data)
			}
		}
	}
	slices.Sort(out)
	return out
}

// WaitRegistered blocks until Registered(topic) equals want (sorted). It returns an
// error naming what it saw if ctx ends first.
func (s *Server) WaitRegistered(ctx context.Context, topic string, want []string) error {
	want = slices.Sorted(slices.Values(want))
	for {
		s.mu.Lock()
		have, ch := s.registeredLocked(topic), s.changed
		s.mu.Unlock()
		if slices.Equal(have, want) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("upstream: registered on %q: %q, waiting for %q: %w", topic, have, want, ctx.Err())
		}
	}
}

// Subscribers returns how many connections are subscribed to topic right now.
func (s *Server) Subscribers(topic string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscribersLocked(topic)
}

func (s *Server) subscribersLocked(topic string) int {
	n := 0
	for sc := range s.conns {
		if _, ok := sc.subs[topic]; ok {
			n++
		}
	}
	return n
}

// WaitSubscribers blocks until Subscribers(topic) >= n. It returns an error wrapping
// ctx.Err() if ctx ends first, and an error if the server is closed.
func (s *Server) WaitSubscribers(ctx context.Context, topic string, n int) error {
	for {
		s.mu.Lock()
		have, closed, ch := s.subscribersLocked(topic), s.closed, s.changed
		s.mu.Unlock()
		if have >= n {
			return nil
		}
		if closed {
			return fmt.Errorf("upstream: server closed with %d subscribers to %q, waiting for %d", have, topic, n)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("upstream: %d subscribers to %q, waiting for %d: %w", have, topic, n, ctx.Err())
		}
	}
}

// Push publishes data to topic from the server side: it sends a message to every
// connection subscribed to topic and returns how many it was written to. It returns
// once the writes are done; per connection, messages keep the order of the Push calls.
func (s *Server) Push(topic string, data []byte) int {
	b, err := encode(packet{Op: opMessage, Topic: topic, Data: data})
	if err != nil {
		return 0
	}
	s.mu.Lock()
	var to []*serverConn
	for sc := range s.conns {
		if _, ok := sc.subs[topic]; ok {
			to = append(to, sc)
		}
	}
	s.mu.Unlock()
	n := 0
	for _, sc := range to {
		if sc.write(b) == nil {
			n++
		}
	}
	return n
}

// PushEach is Push with a payload made per connection: data receives the connection's
// number (1 for the first connection the server accepted, and so on), so that a
// receiver can tell which connection, that is which leadership term, carried it.
func (s *Server) PushEach(topic string, data func(conn int) []byte) int {
	s.mu.Lock()
	var to []*serverConn
	for sc := range s.conns {
		if _, ok := sc.subs[topic]; ok {
			to = append(to, sc)
		}
	}
	s.mu.Unlock()
	n := 0
	for _, sc := range to {
		b, err := encode(packet{Op: opMessage, Topic: topic, Data: data(sc.id)})
		if err == nil && sc.write(b) == nil {
			n++
		}
	}
	return n
}

// Close stops listening, closes every connection and waits for the server's goroutines.
// It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.done)
	s.notifyLocked()
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, sc := range conns {
		sc.cancel()
		sc.c.Close()
	}
	s.wg.Wait()
	return err
}

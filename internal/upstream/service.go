package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/cluster-client-go/cluster"
)

// ErrClosed is returned by the calls made on a Service after its Close, and by the
// calls Close interrupts.
var ErrClosed = errors.New("upstream: service closed")

var errFiles = errors.New("upstream: a Message with Files cannot be sent to the server")

// Service is a cluster.Service backed by one TCP connection to a Server. Its methods
// are safe for concurrent use. Once the connection breaks, its pending calls and every
// later call fail with an error.
type Service struct {
	conn       net.Conn
	readerDone chan struct{}
	writerDone chan struct{}
	stop       chan struct{} // closed when the connection is finished with; stops the writer
	wake       chan struct{} // capacity 1: the outbox has packets
	nextID     atomic.Uint64

	mu      sync.Mutex
	err     error    // non-nil once the Service is unusable: ErrClosed or the connection's end
	out     [][]byte // outbox: framed packets for the writer, in order
	pending map[uint64]func(packet, error)
	topics  map[string]*topicSubs
}

// topicSubs is a topic's local subscribers, sharing one server subscription.
type topicSubs struct {
	list  []*subscriber // copy-on-write, guarded by Service.mu
	ready chan struct{} // closed when the server acknowledged the subscribe
	err   error         // why the subscribe failed; read after ready is closed
}

type subscriber struct {
	emit    func(cluster.Message)
	stopped atomic.Bool
}

// NewService returns a func suitable for cluster.Config.NewService that dials addr.
func NewService(addr string) func(ctx context.Context) (cluster.Service, error) {
	return func(ctx context.Context) (cluster.Service, error) {
		s, err := Dial(ctx, addr)
		if err != nil {
			return nil, err // not a typed nil
		}
		return s, nil
	}
}

// Dial connects one Service to the Server at addr. ctx bounds the dial only.
func Dial(ctx context.Context, addr string) (*Service, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	s := &Service{
		conn:       c,
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		stop:       make(chan struct{}),
		wake:       make(chan struct{}, 1),
		pending:    map[uint64]func(packet, error){},
		topics:     map[string]*topicSubs{},
	}
	go s.read()
	go s.write()
	return s, nil
}

// read is the connection's one reader: it dispatches responses and emits messages, in
// order, until the connection breaks.
func (s *Service) read() {
	defer close(s.readerDone)
	br := bufio.NewReader(s.conn)
	for {
		p, err := decode(br)
		if err != nil {
			s.fail(fmt.Errorf("upstream: connection to %s lost: %w", s.conn.RemoteAddr(), err))
			return
		}
		switch p.Op {
		case opResponse:
			s.mu.Lock()
			done := s.pending[p.ID]
			delete(s.pending, p.ID)
			s.mu.Unlock()
			if done != nil {
				done(p, nil)
			}
		case opMessage:
			s.mu.Lock()
			var list []*subscriber
			if ts := s.topics[p.Topic]; ts != nil {
				list = ts.list
			}
			s.mu.Unlock()
			m := cluster.Message{Data: p.Data}
			for _, sub := range list {
				if !sub.stopped.Load() {
					sub.emit(m)
				}
			}
		}
	}
}

// write is the connection's one writer: it sends the outbox in order. A failed write
// closes the connection, which ends the reader and fails the pending calls.
func (s *Service) write() {
	defer close(s.writerDone)
	for {
		select {
		case <-s.stop:
			return
		case <-s.wake:
		}
		s.mu.Lock()
		out := s.out
		s.out = nil
		s.mu.Unlock()
		bufs := net.Buffers(out)
		if _, err := bufs.WriteTo(s.conn); err != nil {
			s.conn.Close()
			return
		}
	}
}

// fail makes the Service unusable with err (unless it already is) and fails every
// pending call.
func (s *Service) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	err = s.err
	pending := s.pending
	s.pending = map[uint64]func(packet, error){}
	s.out = nil
	s.mu.Unlock()
	s.conn.Close()
	close(s.stop)
	for _, done := range pending {
		done(packet{}, err)
	}
}

// enqueueLocked queues a framed packet for the writer. s.mu must be held.
func (s *Service) enqueueLocked(b []byte) {
	s.out = append(s.out, b)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// request sends p with a fresh id; done runs, on the reader's goroutine or on the one
// failing the Service, with the response or the error that ended the connection.
func (s *Service) request(p packet, done func(packet, error)) (uint64, error) {
	p.ID = s.nextID.Add(1)
	b, err := encode(p)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	s.pending[p.ID] = done
	s.enqueueLocked(b)
	return p.ID, nil
}

// forget drops the pending request id, whose caller stopped waiting.
func (s *Service) forget(id uint64) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// call sends p and waits for its response or the end of ctx. A server error comes back
// as an error carrying the server's text.
func (s *Service) call(ctx context.Context, p packet) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type result struct {
		p   packet
		err error
	}
	ch := make(chan result, 1)
	id, err := s.request(p, func(p packet, err error) { ch <- result{p, err} })
	if err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		if r.p.Err != "" {
			return nil, errors.New(r.p.Err)
		}
		return r.p.Data, nil
	case <-ctx.Done():
		s.forget(id)
		return nil, ctx.Err()
	}
}

// Invoke calls method on the server with req's Data and returns the response. If ctx
// ends first it returns ctx.Err(); the server may still run the call.
func (s *Service) Invoke(ctx context.Context, method string, req cluster.Message) (cluster.Message, error) {
	if len(req.Files) > 0 {
		return cluster.Message{}, errFiles
	}
	data, err := s.call(ctx, packet{Op: opInvoke, Method: method, Data: req.Data})
	if err != nil {
		return cluster.Message{}, err
	}
	return cluster.Message{Data: data}, nil
}

// Publish sends msg to topic on the server, which delivers it to every connection
// subscribed to topic (this one included) before it answers.
func (s *Service) Publish(ctx context.Context, topic string, msg cluster.Message) error {
	if len(msg.Files) > 0 {
		return errFiles
	}
	_, err := s.call(ctx, packet{Op: opPublish, Topic: topic, Data: msg.Data})
	return err
}

// Withdraw takes back one earlier Publish of msg on topic by this connection; it
// implements cluster.Withdrawer.
func (s *Service) Withdraw(ctx context.Context, topic string, msg cluster.Message) error {
	_, err := s.call(ctx, packet{Op: opWithdraw, Topic: topic, Data: msg.Data})
	return err
}

// Subscribe calls emit, from the connection's reader goroutine and in order, for every
// message on topic, until cancel is called. It returns once the server has the
// subscription, so a message pushed after it returns reaches emit; emit may be called
// before it returns. The server sees one subscription per topic however many times
// Subscribe is called: the first subscribes, the last cancel unsubscribes. cancel is
// idempotent. ctx bounds the Subscribe call only.
func (s *Service) Subscribe(ctx context.Context, topic string, emit func(cluster.Message)) (cancel func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sub := &subscriber{emit: emit}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	ts := s.topics[topic]
	if ts == nil {
		id := s.nextID.Add(1)
		b, err := encode(packet{Op: opSubscribe, ID: id, Topic: topic})
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		ts = &topicSubs{ready: make(chan struct{})}
		s.topics[topic] = ts
		s.pending[id] = func(p packet, err error) {
			if err == nil && p.Err != "" {
				err = errors.New(p.Err)
			}
			if err != nil {
				ts.err = err
				s.mu.Lock()
				if s.topics[topic] == ts {
					delete(s.topics, topic)
				}
				s.mu.Unlock()
			}
			close(ts.ready)
		}
		s.enqueueLocked(b)
	}
	ts.list = append(ts.list[:len(ts.list):len(ts.list)], sub)
	s.mu.Unlock()

	var once sync.Once
	cancel = func() {
		once.Do(func() {
			sub.stopped.Store(true)
			s.mu.Lock()
			defer s.mu.Unlock()
			list := make([]*subscriber, 0, len(ts.list))
			for _, o := range ts.list {
				if o != sub {
					list = append(list, o)
				}
			}
			ts.list = list
			if len(list) == 0 && s.topics[topic] == ts {
				delete(s.topics, topic)
				if s.err == nil {
					if b, err := encode(packet{Op: opUnsubscribe, Topic: topic}); err == nil {
						s.enqueueLocked(b)
					}
				}
			}
		})
	}
	select {
	case <-ts.ready:
		if ts.err != nil {
			cancel()
			return nil, ts.err
		}
		return cancel, nil
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	}
}

// Close closes the connection and waits for its reader and writer. Pending calls and
// later ones fail with ErrClosed. Close is idempotent.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.err == nil {
		s.err = ErrClosed
	}
	s.mu.Unlock()
	s.conn.Close()
	<-s.readerDone
	<-s.writerDone
	return nil
}

// upstream.go is this worker's cluster.Service: a small client, standard library only,
// for the demo's upstream server. Only the Leader builds it (Config.NewService). To
// share your own server, replace this file with a Service wrapping your real client (a
// registry, a Redis, an RPC stub).
//
// The demo's protocol, over one TCP connection: each packet is a 4-byte big-endian length
// followed by a JSON object. The client sends {"op":"invoke","id":N,"method":M,"data":D},
// {"op":"subscribe","id":N,"topic":T}, {"op":"unsubscribe","topic":T} and
// {"op":"publish","id":N,"topic":T,"data":D}; the server answers each packet that has an
// id with {"op":"response","id":N,"data":D,"err":E}, and sends {"op":"message",
// "topic":T,"data":D} to the connections subscribed to T. D is base64, as JSON encodes
// a []byte.

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/cluster-client-go/cluster"
)

// maxPacket bounds a packet's JSON, as the server does.
const maxPacket = 64 << 20

type packet struct {
	Op     string `json:"op"`
	ID     uint64 `json:"id,omitempty"`
	Method string `json:"method,omitempty"`
	Topic  string `json:"topic,omitempty"`
	Data   []byte `json:"data,omitempty"`
	Err    string `json:"err,omitempty"`
}

// upstreamService is a cluster.Service over one connection to the demo's upstream
// server. Its methods are safe for concurrent use; once the connection ends, every
// call fails.
type upstreamService struct {
	conn net.Conn
	wmu  sync.Mutex    // one packet written at a time
	done chan struct{} // closed when the reader has ended

	mu      sync.Mutex
	err     error // why the connection ended
	lastID  uint64
	pending map[uint64]chan packet           // calls waiting for their response
	subs    map[string]func(cluster.Message) // cluster subscribes once per topic
}

// dialUpstream returns a Config.NewService that connects to the server at addr.
func dialUpstream(addr string) func(context.Context) (cluster.Service, error) {
	return func(ctx context.Context) (cluster.Service, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		s := &upstreamService{conn: conn, done: make(chan struct{}),
			pending: map[uint64]chan packet{}, subs: map[string]func(cluster.Message){}}
		go s.read()
		return s, nil
	}
}

// read hands each response to its caller and each message to its topic's subscriber,
// until the connection ends.
func (s *upstreamService) read() {
	defer close(s.done)
	r := bufio.NewReader(s.conn)
	for {
		p, err := readPacket(r)
		if err != nil {
			s.mu.Lock()
			s.err = fmt.Errorf("upstream connection ended: %w", err)
			s.mu.Unlock()
			s.conn.Close()
			return
		}
		s.mu.Lock()
		reply, emit := s.pending[p.ID], s.subs[p.Topic]
		delete(s.pending, p.ID)
		s.mu.Unlock()
		switch {
		case p.Op == "response" && reply != nil:
			reply <- p // buffered
		case p.Op == "message" && emit != nil:
			emit(cluster.Message{Data: p.Data})
		}
	}
}

func readPacket(r io.Reader) (p packet, err error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return p, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > maxPacket {
		return p, fmt.Errorf("packet of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return p, err
	}
	return p, json.Unmarshal(b, &p)
}

func (s *upstreamService) send(p packet) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	b = append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.conn.Write(b); err != nil {
		s.conn.Close() // ends the reader, which fails the pending calls
		return err
	}
	return nil
}

// call sends p with a new id and waits for the response.
func (s *upstreamService) call(ctx context.Context, p packet) ([]byte, error) {
	reply := make(chan packet, 1)
	s.mu.Lock()
	if s.err != nil {
		defer s.mu.Unlock()
		return nil, s.err
	}
	s.lastID++
	p.ID = s.lastID
	s.pending[p.ID] = reply
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, p.ID)
		s.mu.Unlock()
	}()
	if err := s.send(p); err != nil {
		return nil, err
	}
	select {
	case r := <-reply:
		if r.Err != "" {
			return nil, errors.New(r.Err)
		}
		return r.Data, nil
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return nil, s.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *upstreamService) Invoke(ctx context.Context, method string, req cluster.Message) (cluster.Message, error) {
	data, err := s.call(ctx, packet{Op: "invoke", Method: method, Data: req.Data})
	return cluster.Message{Data: data}, err
}

func (s *upstreamService) Publish(ctx context.Context, topic string, msg cluster.Message) error {
	_, err := s.call(ctx, packet{Op: "publish", Topic: topic, Data: msg.Data})
	return err
}

// Subscribe subscribes this connection to topic; the server's messages on it go to emit
// until cancel.
func (s *upstreamService) Subscribe(ctx context.Context, topic string, emit func(cluster.Message)) (cancel func(), err error) {
	s.mu.Lock()
	s.subs[topic] = emit
	s.mu.Unlock()
	cancel = func() {
		s.mu.Lock()
		delete(s.subs, topic)
		s.mu.Unlock()
		_ = s.send(packet{Op: "unsubscribe", Topic: topic})
	}
	if _, err := s.call(ctx, packet{Op: "subscribe", Topic: topic}); err != nil {
		cancel()
		return nil, err
	}
	return cancel, nil
}

// Close closes the connection; the calls still waiting fail.
func (s *upstreamService) Close() error {
	s.conn.Close()
	<-s.done
	return nil
}

package member

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/cluster-client-go/cluster"
)

// withWhoami adds the method "whoami" to the Services next builds: it answers the
// Leader's host name and pid as the Leader sees them ("host pid"), which tells which
// process leads without trusting pids alone (they collide across pid namespaces).
func withWhoami(next func(context.Context) (cluster.Service, error)) func(context.Context) (cluster.Service, error) {
	return func(ctx context.Context) (cluster.Service, error) {
		svc, err := next(ctx)
		if err != nil {
			return nil, err
		}
		return whoamiService{svc}, nil
	}
}

// whoami is what "whoami" answers in this process.
func whoami() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s %d", host, os.Getpid())
}

type whoamiService struct{ cluster.Service }

func (w whoamiService) Invoke(ctx context.Context, method string, req cluster.Message) (cluster.Message, error) {
	if method == "whoami" {
		return cluster.Message{Data: []byte(whoami())}, nil
	}
	return w.Service.Invoke(ctx, method, req)
}

// Withdraw keeps the wrapped Service's registration semantics.
func (w whoamiService) Withdraw(ctx context.Context, topic string, msg cluster.Message) error {
	if wd, ok := w.Service.(cluster.Withdrawer); ok {
		return wd.Withdraw(ctx, topic, msg)
	}
	return nil
}

// newEchoService builds the in-process Service of a member with no upstream server
// (so that what is measured or tested is the library, not a server): "echo" answers
// the request, and topics are an in-memory broker that delivers what is published to
// its own subscribers.
func newEchoService(context.Context) (cluster.Service, error) {
	return &echoService{subs: map[string]map[int]func(cluster.Message){}}, nil
}

type echoService struct {
	mu   sync.Mutex
	next int
	subs map[string]map[int]func(cluster.Message)
}

func (s *echoService) Invoke(_ context.Context, method string, req cluster.Message) (cluster.Message, error) {
	if method != "echo" {
		return cluster.Message{}, fmt.Errorf("no method %q", method)
	}
	if req.Blob != nil || len(req.Files) > 0 {
		return req.Clone() // the request is lent: give back a Message of our own
	}
	return req, nil
}

func (s *echoService) Subscribe(_ context.Context, topic string, emit func(cluster.Message)) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	id := s.next
	if s.subs[topic] == nil {
		s.subs[topic] = map[int]func(cluster.Message){}
	}
	s.subs[topic][id] = emit
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs[topic], id)
	}, nil
}

// Publish delivers a copy of msg's Data: msg is lent.
func (s *echoService) Publish(_ context.Context, topic string, msg cluster.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, emit := range s.subs[topic] {
		emit(cluster.Message{Data: bytes.Clone(msg.Data)})
	}
	return nil
}

func (s *echoService) Close() error { return nil }

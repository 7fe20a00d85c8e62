package sharedredis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cluster-client-go/cluster"
)

// The typed methods the Service answers: each is one Redis command, run by the
// Leader on its command connection. Call them with Method.Invoke from any member:
//
//	v, err := sharedredis.Get.Invoke(ctx, c, "greeting") // nil when the key is missing
//
// A Redis error (a wrong type, say) reaches the caller as a *cluster.RemoteError.
var (
	// Get is GET key: the value, or nil when the key does not exist.
	Get = cluster.Method[string, *string]{Name: "redis.get"}
	// Set is SET key value, with an expiry (EX or PX) when TTL is positive.
	Set = cluster.Method[SetArgs, struct{}]{Name: "redis.set"}
	// Del is DEL key...: the number of keys removed.
	Del = cluster.Method[[]string, int64]{Name: "redis.del"}
	// Incr is INCR key: the value after the increment.
	Incr = cluster.Method[string, int64]{Name: "redis.incr"}
	// IncrBy is INCRBY key by: the value after the increment.
	IncrBy = cluster.Method[IncrByArgs, int64]{Name: "redis.incrby"}
)

// SetArgs is Set's request.
type SetArgs struct {
	Key   string        `json:"key"`
	Value string        `json:"value"`
	TTL   time.Duration `json:"ttl,omitempty"` // 0: no expiry
}

// IncrByArgs is IncrBy's request.
type IncrByArgs struct {
	Key string `json:"key"`
	By  int64  `json:"by"`
}

// Invoke runs the command of the typed method named method with the request in
// req.Data (see Get, Set, Del, Incr, IncrBy). The cluster calls it for InvokeOneway
// calls; the others come in batches (InvokeBatch).
func (s *Service) Invoke(ctx context.Context, method string, req cluster.Message) (cluster.Message, error) {
	read, err := stage(ctx, s.cmds, method, req)
	if err != nil {
		return cluster.Message{}, err
	}
	return read()
}

// InvokeBatch runs the commands of calls as one pipeline on the command connection,
// on the calling goroutine: one round trip to Redis for the batch, the commands in the
// calls' order. A call whose request cannot be read fails alone; a Redis error (a
// wrong type, say) fails its own command only.
func (s *Service) InvokeBatch(ctx context.Context, calls []*cluster.Call) {
	pipe := s.rdb.Pipeline()
	reads := make([]func() (cluster.Message, error), len(calls))
	for i, c := range calls {
		read, err := stage(ctx, pipe, c.Method, c.Req)
		if err != nil {
			c.Return(cluster.Message{}, err)
			continue
		}
		reads[i] = read
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // each command holds its own reply or error
	}
	for i, c := range calls {
		if reads[i] != nil {
			c.Return(reads[i]())
		}
	}
}

// stage queues the command of the typed method named method, with the request in
// req.Data, on cmds, and returns what reads its reply as the response: once the
// pipeline ran for a Pipeliner, at once for the autopipeliner.
func stage(ctx context.Context, cmds commands, method string, req cluster.Message) (func() (cluster.Message, error), error) {
	if err := dataOnly("invoke", method, req); err != nil {
		return nil, err
	}
	switch method {
	case Get.Name:
		return queue(Get, req, func(key string) (func() (*string, error), error) {
			cmd := cmds.Get(ctx, key)
			return func() (*string, error) {
				v, err := cmd.Result()
				if errors.Is(err, redis.Nil) {
					return nil, nil
				}
				if err != nil {
					return nil, err
				}
				return &v, nil
			}, nil
		})
	case Set.Name:
		return queue(Set, req, func(a SetArgs) (func() (struct{}, error), error) {
			if a.TTL < 0 {
				return nil, fmt.Errorf("set %q: negative TTL %v", a.Key, a.TTL)
			}
			cmd := cmds.Set(ctx, a.Key, a.Value, a.TTL)
			return func() (struct{}, error) { return struct{}{}, cmd.Err() }, nil
		})
	case Del.Name:
		return queue(Del, req, func(keys []string) (func() (int64, error), error) {
			if len(keys) == 0 {
				return func() (int64, error) { return 0, nil }, nil
			}
			return cmds.Del(ctx, keys...).Result, nil
		})
	case Incr.Name:
		return queue(Incr, req, func(key string) (func() (int64, error), error) {
			return cmds.Incr(ctx, key).Result, nil
		})
	case IncrBy.Name:
		return queue(IncrBy, req, func(a IncrByArgs) (func() (int64, error), error) {
			return cmds.IncrBy(ctx, a.Key, a.By).Result, nil
		})
	}
	return nil, fmt.Errorf("sharedredis: unknown method %q", method)
}

// queue decodes m's request from req, queues its command with q, and returns what
// reads the command's reply and encodes it as m's response.
func queue[Req, Resp any](m cluster.Method[Req, Resp], req cluster.Message, q func(Req) (func() (Resp, error), error)) (func() (cluster.Message, error), error) {
	codec := m.Codec
	if codec == nil {
		codec = cluster.JSON{}
	}
	var in Req
	if err := codec.Unmarshal(req.Data, &in); err != nil {
		return nil, fmt.Errorf("decoding the %q request: %w", m.Name, err)
	}
	read, err := q(in)
	if err != nil {
		return nil, err
	}
	return func() (cluster.Message, error) {
		out, err := read()
		if err != nil {
			return cluster.Message{}, err
		}
		data, err := codec.Marshal(out)
		if err != nil {
			return cluster.Message{}, fmt.Errorf("encoding the %q response: %w", m.Name, err)
		}
		return cluster.Message{Data: data}, nil
	}, nil
}

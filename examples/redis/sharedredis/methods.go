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
// req.Data (see Get, Set, Del, Incr, IncrBy).
func (s *Service) Invoke(ctx context.Context, method string, req cluster.Message) (cluster.Message, error) {
	if err := dataOnly("invoke", method, req); err != nil {
		return cluster.Message{}, err
	}
	switch method {
	case Get.Name:
		return Get.Handle(ctx, req, s.get)
	case Set.Name:
		return Set.Handle(ctx, req, s.set)
	case Del.Name:
		return Del.Handle(ctx, req, s.del)
	case Incr.Name:
		return Incr.Handle(ctx, req, s.incr)
	case IncrBy.Name:
		return IncrBy.Handle(ctx, req, s.incrBy)
	}
	return cluster.Message{}, fmt.Errorf("sharedredis: unknown method %q", method)
}

func (s *Service) get(ctx context.Context, key string) (*string, error) {
	v, err := s.cmds.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &v, nil
}

func (s *Service) set(ctx context.Context, a SetArgs) (struct{}, error) {
	if a.TTL < 0 {
		return struct{}{}, fmt.Errorf("set %q: negative TTL %v", a.Key, a.TTL)
	}
	return struct{}{}, s.cmds.Set(ctx, a.Key, a.Value, a.TTL).Err()
}

func (s *Service) del(ctx context.Context, keys []string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	return s.cmds.Del(ctx, keys...).Result()
}

func (s *Service) incr(ctx context.Context, key string) (int64, error) {
	return s.cmds.Incr(ctx, key).Result()
}

func (s *Service) incrBy(ctx context.Context, a IncrByArgs) (int64, error) {
	return s.cmds.IncrBy(ctx, a.Key, a.By).Result()
}

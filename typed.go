package cluster

import (
	"context"
	"encoding/json"
	"fmt"
)

// Codec turns typed values into Message payloads and back.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSON is the default Codec (encoding/json): a Method or Topic with a nil Codec uses it.
type JSON struct{}

// Marshal encodes v with json.Marshal.
func (JSON) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes data into v with json.Unmarshal.
func (JSON) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

func codecOr(c Codec) Codec {
	if c == nil {
		return JSON{}
	}
	return c
}

// checkClient refuses a nil Client with an error naming the typed call.
func checkClient(c *Client, what, name string) error {
	if c == nil {
		return fmt.Errorf("%w: %s %q: the Client must not be nil", ErrConfig, what, name)
	}
	return nil
}

// Method is a typed handle on one Service method: it encodes requests and decodes
// responses with Codec (JSON when nil), so callers never marshal by hand.
//
//	var getUser = cluster.Method[UserID, User]{Name: "getUser"}
//	u, err := getUser.Invoke(ctx, c, 42)
type Method[Req, Resp any] struct {
	Name  string
	Codec Codec
}

// Invoke encodes req, calls Client.Invoke and decodes the response.
func (m Method[Req, Resp]) Invoke(ctx context.Context, c *Client, req Req) (Resp, error) {
	var resp Resp
	if err := checkClient(c, "Method.Invoke", m.Name); err != nil {
		return resp, err
	}
	codec := codecOr(m.Codec)
	data, err := codec.Marshal(req)
	if err != nil {
		return resp, fmt.Errorf("cluster: invoke %q: encoding the request: %w", m.Name, err)
	}
	out, err := c.Invoke(ctx, m.Name, Message{Data: data})
	if err != nil {
		return resp, err
	}
	defer out.Close() // a Blob or Files the Service returned: only Data is decoded
	if err := codec.Unmarshal(out.Data, &resp); err != nil {
		return resp, fmt.Errorf("cluster: invoke %q: decoding the response: %w", m.Name, err)
	}
	return resp, nil
}

// InvokeOneway encodes req and calls Client.InvokeOneway.
func (m Method[Req, Resp]) InvokeOneway(ctx context.Context, c *Client, req Req) error {
	if err := checkClient(c, "Method.InvokeOneway", m.Name); err != nil {
		return err
	}
	data, err := codecOr(m.Codec).Marshal(req)
	if err != nil {
		return fmt.Errorf("cluster: invoke %q: encoding the request: %w", m.Name, err)
	}
	return c.InvokeOneway(ctx, m.Name, Message{Data: data})
}

// Handle adapts a typed function to the shape of Service.Invoke for one method, for
// Services that dispatch on the method name.
func (m Method[Req, Resp]) Handle(ctx context.Context, req Message, fn func(context.Context, Req) (Resp, error)) (Message, error) {
	if fn == nil {
		return Message{}, fmt.Errorf("%w: Method.Handle %q: fn must not be nil", ErrConfig, m.Name)
	}
	codec := codecOr(m.Codec)
	var in Req
	if err := codec.Unmarshal(req.Data, &in); err != nil {
		return Message{}, fmt.Errorf("decoding the %q request: %w", m.Name, err)
	}
	out, err := fn(ctx, in)
	if err != nil {
		return Message{}, err
	}
	data, err := codec.Marshal(out)
	if err != nil {
		return Message{}, fmt.Errorf("encoding the %q response: %w", m.Name, err)
	}
	return Message{Data: data}, nil
}

// Topic is a typed handle on one topic.
//
//	var config = cluster.Topic[Config]{Name: "config"}
//	sub, err := config.Subscribe(ctx, c, func(cfg Config) { ... })
type Topic[T any] struct {
	Name  string
	Codec Codec
}

// Publish encodes v and calls Client.Publish.
func (t Topic[T]) Publish(ctx context.Context, c *Client, v T) error {
	if err := checkClient(c, "Topic.Publish", t.Name); err != nil {
		return err
	}
	data, err := codecOr(t.Codec).Marshal(v)
	if err != nil {
		return fmt.Errorf("cluster: publish %q: encoding: %w", t.Name, err)
	}
	return c.Publish(ctx, t.Name, Message{Data: data})
}

// Subscribe calls fn with every message of the topic, decoded (opts as for
// Client.Subscribe). A message that does not decode is skipped and logged
// (Config.Logger), never passed on half-filled. A nil fn is an error matching ErrConfig.
func (t Topic[T]) Subscribe(ctx context.Context, c *Client, fn func(T), opts ...SubscribeOption) (*Subscription, error) {
	if err := checkClient(c, "Topic.Subscribe", t.Name); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, fmt.Errorf("%w: Topic.Subscribe %q: fn must not be nil", ErrConfig, t.Name)
	}
	codec := codecOr(t.Codec)
	return c.Subscribe(ctx, t.Name, func(m Message) {
		var v T
		if err := codec.Unmarshal(m.Data, &v); err != nil {
			c.cfg.Logger.Warn("cluster: message does not decode; skipped", "topic", t.Name, "err", err)
			return
		}
		fn(v)
	}, opts...)
}

// Register encodes v and calls Client.Register.
func (t Topic[T]) Register(ctx context.Context, c *Client, v T) (*Registration, error) {
	if err := checkClient(c, "Topic.Register", t.Name); err != nil {
		return nil, err
	}
	data, err := codecOr(t.Codec).Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cluster: register %q: encoding: %w", t.Name, err)
	}
	return c.Register(ctx, t.Name, Message{Data: data})
}

// Encode encodes v for an emit or a response with the topic's Codec.
func (t Topic[T]) Encode(v T) (Message, error) {
	data, err := codecOr(t.Codec).Marshal(v)
	return Message{Data: data}, err
}

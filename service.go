package cluster

import (
	"context"
	"os"
)

// Message is what travels through the cluster: a payload and, on transports that pass
// descriptors, files. A Message handed to a subscriber is shared with the other
// subscribers of the topic: treat Data as read-only.
type Message struct {
	Data []byte
	// Files are reserved for descriptor passing; a Message with Files is refused with
	// an error on this version's transport.
	Files []*os.File
}

// Service is the real client, the one that talks to the server. Only the Leader builds
// it (Config.NewService), once per leadership term; every member's calls end up here.
// Its methods are called concurrently.
type Service interface {
	// Invoke performs a request/response call. ctx carries the caller's deadline.
	Invoke(ctx context.Context, method string, req Message) (Message, error)
	// Subscribe starts the one real subscription for topic and returns a function that
	// cancels it. emit delivers each message; it never blocks and may be called from any
	// goroutine, including during Subscribe itself. The Service must not modify a
	// Message's Data after emitting it. ctx bounds the Subscribe call only, not the
	// subscription's life.
	Subscribe(ctx context.Context, topic string, emit func(Message)) (cancel func(), err error)
	// Publish sends msg to topic on the server.
	Publish(ctx context.Context, topic string, msg Message) error
	// Close releases the Service when its leadership term ends.
	Close() error
}

// Withdrawer is implemented by a Service that can take back a registration (see
// Client.Register): what a service registry calls unpublish or deregister. The Leader
// calls Withdraw with the topic and the Message that Publish registered, when the
// registering member withdraws it or when that member's connection ends (the member
// died or left). A Service that does not implement Withdrawer is never told; its
// registrations are still never replayed to later Leaders once withdrawn.
//
// Withdraw must undo exactly one earlier Publish of the same topic and payload: two
// members may register equal payloads, and withdrawing one must leave the other.
type Withdrawer interface {
	Withdraw(ctx context.Context, topic string, msg Message) error
}

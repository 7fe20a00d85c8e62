package cluster

import (
	"context"
)

// Service is the real client, the one that talks to the server. Only the Leader builds
// it (Config.NewService), once per leadership term; every member's calls end up here.
// Its methods are called concurrently.
type Service interface {
	// Invoke performs a request/response call. ctx carries the caller's deadline. req is
	// lent: its Blob and Files are valid until Invoke returns (Clone them to keep them).
	// The returned Message is given away: the library closes its Blob and Files once
	// they are sent, or hands them to the local caller, who owns them.
	Invoke(ctx context.Context, method string, req Message) (Message, error)
	// Subscribe starts the one real subscription for topic and returns a function that
	// cancels it. emit delivers each message; it never blocks and may be called from any
	// goroutine, including during Subscribe itself. The Service must not modify a
	// Message's Data after emitting it. emit takes the Message's Blob and Files: the
	// library closes them when no subscriber needs them any more, so emit each one once
	// (Clone to emit the same blob again). ctx bounds the Subscribe call only, not the
	// subscription's life.
	Subscribe(ctx context.Context, topic string, emit func(Message)) (cancel func(), err error)
	// Publish sends msg to topic on the server. msg is lent, as Invoke's req is.
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

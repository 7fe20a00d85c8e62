// Package cluster lets the processes of one host share ONE connection to a server.
//
// Every process Joins the same cluster Name. Exactly one of them, the Leader, holds an
// exclusive flock on <Dir>/<Name>.lock; only it builds the Service (the real client: a
// registry, a Redis connection, an RPC stub) and talks to the server. Every other
// process is a Follower: its calls travel to the Leader over the Unix socket
// <Dir>/<Name>.sock. The kernel releases the lock when the Leader dies, even by
// SIGKILL, and a Follower takes over within milliseconds; the others reconnect to it and
// re-establish their subscriptions. Callers see the same API in every role:
//
//	c, err := cluster.Join(ctx, cluster.Config{Name: "registry", NewService: newRegistryClient})
//	defer c.Close()
//	out, err := c.Invoke(ctx, "getData", cluster.Message{Data: []byte(`"id"`)})
//	sub, err := c.Subscribe(ctx, "config", func(m cluster.Message) { ... })
//	err = c.Publish(ctx, "config", cluster.Message{Data: payload})
//
// Semantics, modelled on the Node.js cluster-client:
//
//   - One Service subscription per topic however many subscribers the host has; the
//     latest message of a topic is replayed at once to a late subscriber; the last
//     unsubscribe cancels the Service's subscription; per-topic order is kept.
//   - Invokes are at-most-once: a call in flight when the Leader dies returns
//     ErrLeaderLost and is never re-sent. Calls made while no Leader is reachable wait
//     for the next one, within their context.
//   - A slow subscriber never stalls the Leader: each Subscription has a bounded queue
//     that drops its oldest message, and a Follower process that stops reading is
//     disconnected (it reconnects and gets the latest message again).
//   - Register is a publish the cluster remembers: each member replays its live
//     registrations, in order, to every new Leader; Withdraw takes one back for good;
//     a member that dies has its registrations withdrawn by the Leader (Withdrawer).
//     Plain Publish is never replayed.
//   - Subscribe with the Shared option shares work: each message goes to one shared
//     subscriber on the host. Subscription.First waits for a topic's first value.
//   - A peer is dead when its connection ends: the kernel reports that at once, even
//     after SIGKILL. A process stopped (SIGSTOP, a debugger) or busy is slow, not dead,
//     and keeps its place unless Config.HeartbeatTimeout is set. A stopped Leader keeps
//     its lock, so no one may take over: flock gives safety (never two Leaders), not
//     liveness; calls to it wait out their deadlines.
//
// The application's code is contained like a peer's: a panic in the Service or in a
// callback is recovered and reported (ErrServicePanic, Stats.Panics), a NewService
// that fails is reported by Join (ErrServiceUnavailable), Config.Errors lets errors keep
// their identity across processes, Config.Identity keeps two programs that share a
// Name from serving each other, and Close may be called from anywhere.
//
// Large payloads travel as a Message.Blob (package blob): sealed shared memory passed
// as a file descriptor and mapped read-only by every receiver, so neither a Follower's
// request nor the Leader's fan-out to many subscribers copies it; over TCP it is sent
// inline, transparently. Message.Files passes open files (pipes, sockets) the same way,
// on Unix sockets on Linux only. See Message for who owns, and must Close, what.
//
// Transports: by default members elect with flock(2) (gofrs/flock) and talk over a
// Unix socket; on Linux SO_PEERCRED admits only the same user (Config.AllowUIDs and
// AllowGIDs widen it), elsewhere the 0700 directory and the 0600 socket are the gate.
// Where flock or Unix sockets are unavailable (and on Windows), or when
// Config.Transport or CLUSTER_TRANSPORT=tcp asks for it, members elect by binding
// 127.0.0.1:Port and talk over loopback TCP, authenticated by a per-term token in
// <Dir>/<Name>.token. Every member of a cluster must use the same transport.
package cluster

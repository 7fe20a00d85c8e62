// Package ipc is the transport between a Leader and its Followers: a framed,
// multiplexed, full-duplex connection (Conn) over a Unix socket, a listener that creates
// its socket with a fixed mode and never unlinks it behind the election lock's back,
// peer credential checks, and the hello/welcome handshake.
//
// A Conn has exactly two goroutines: a reader that parses frames through a 64 KiB
// buffer (one syscall, many frames) and dispatches them, and a writer that coalesces
// every queued frame into one write and sends heartbeats when the line is idle.
// Requests carry per-connection ids; each pending call completes exactly once: by its
// response, by its caller's context, or with the Conn's cause when the Conn ends.
//
// The package knows nothing of election: which side leads is the root package's
// business.
package ipc

// Package ipc is the transport between a Leader and its Followers: a framed,
// multiplexed, full-duplex connection (Conn) over a Unix socket, a listener that creates
// its socket with a fixed mode and never unlinks it behind the election lock's back,
// peer credential checks, and the hello/welcome handshake.
//
// A Conn has two goroutines of its own: a reader that parses frames through a buffer
// that grows to 64 KiB (one syscall, many frames) and dispatches them, and a writer
// that coalesces every queued frame into one write and sends heartbeats when the line
// is idle. Requests carry per-connection ids; each pending call completes exactly
// once: by its response, by its caller's context, or with the Conn's cause when the
// Conn ends.
//
// The reading role can move, one holder at a time, without losing a byte: a Handler
// may run a quick request where it was read and have another goroutine take over if
// it blocks (Conn.Inline), and with Options.CallerReads a call alone in flight reads
// its own response, so that the response wakes the goroutine that wants it directly.
// A frame reader resumes a frame that a read deadline cut anywhere.
//
// # File descriptors
//
// On a Unix socket on Linux a frame may pass up to frame.MaxFDs open files
// (SCM_RIGHTS): SendParts and Call send them, a FileHandler and Call receive them;
// CanPassFiles says whether a Conn can. Elsewhere
// (TCP, other systems) sending files fails with ErrFDUnsupported and a frame declaring
// descriptors is a protocol violation.
//
// The writer duplicates the caller's descriptors when the frame is queued and sends a
// frame with descriptors in a sendmsg of its own that starts at the frame's first byte
// and holds nothing but that frame; frames without descriptors are still coalesced. The
// reader reads with recvmsg into its own buffer and attaches each batch of descriptors
// to the last frame that starts within the bytes that recvmsg returned with it (on
// Linux, a unix-stream recvmsg returns the descriptors of at most one sendmsg, and no
// bytes after that sendmsg's). A batch whose count differs from what its frame
// declares, a frame declaring descriptors with none, a batch no frame starts in, and
// MSG_CTRUNC are protocol violations that end the Conn. Only responses and frames for a
// FileHandler may pass descriptors. Every descriptor the Conn holds and does not deliver
// (a frame never written, a violation, a response to an abandoned call) is closed.
//
// # Limits on the peer
//
// A Conn bounds what its peer makes it hold: the bytes queued for a peer that does not
// read (Options.MaxQueue), the size of a frame (Options.Limits), the memory of frames
// not complete yet (a frame over 64 KiB is read into a buffer that grows with the bytes
// that arrive, and Options.Budget bounds such memory across Conns: see Budget), and the
// time a frame may take once its header is read (Options.FrameTimeout). A peer that
// breaks the protocol or a limit is sent an error frame saying why before the Conn
// closes (see Conn.Fail, which a Handler may call too).
//
// The package knows nothing of election: which side leads is the root package's
// business.
package ipc

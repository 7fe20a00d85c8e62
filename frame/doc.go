// Package frame is the wire format spoken between a cluster Leader and its Followers:
// a pure codec with no sockets, goroutines or clocks.
//
// Every frame is a fixed 24-byte big-endian [Header] followed by MetaLen bytes of meta
// (a method, topic or error code, UTF-8) and BodyLen bytes of body (the payload):
//
//	offset size field
//	0      1    version (always [Version])
//	1      1    kind (see [Kind])
//	2      1    flags (none defined in version 1; any set bit is a protocol violation)
//	3      1    number of file descriptors passed with the frame (at most [MaxFDs])
//	4      8    request id
//	12     4    timeout in milliseconds (0 = none)
//	16     4    meta length
//	20     4    body length
//
// [ParseHeader] validates a header against [Limits] before the caller allocates
// anything for the meta and body, so a hostile peer cannot make a reader allocate more
// than the limits allow. Violations match [ErrProtocol] or [ErrTooLarge]. A follower's
// first frame is a hello ([Hello]), answered by a welcome ([Welcome]) or an error frame;
// an error frame carries one of the Code constants (such as [CodeVersion]) as its meta.
//
// The package only encodes and decodes bytes: it never reads the clock, never starts a
// goroutine, and [Read] and [Write] block only as long as the io.Reader or io.Writer
// they are given. SPEC.md in this directory specifies the format in prose, for
// implementations in other languages.
package frame

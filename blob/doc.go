// Package blob holds large payloads in shared memory so that they cross a local socket
// as a file descriptor instead of as bytes.
//
// A Blob's bytes live in a sealed memfd (Linux): written once, then sealed against
// writing, growing and shrinking (F_SEAL_WRITE|F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL),
// then mapped read-only. The sender passes File() to another process (for example with
// ipc.Conn.SendParts); the receiver calls Open, which checks the seals and maps the same
// pages read-only: nothing is copied, whatever the size, and neither side can change
// the bytes the other sees. The kernel frees the memory when the last descriptor and
// the last mapping are gone: there is nothing to clean up after a crash.
//
// Platforms:
//
//   - Linux: memfd with seals, as above. Open refuses a descriptor that is not a memfd
//     sealed against write, grow and shrink (ErrNotSealed).
//   - Other Unix systems (macOS, FreeBSD, ...): an unlinked temporary file, mapped
//     read-only. These systems have no seals (or this package does not use them): the
//     sender could still change the file after passing it, and Open cannot tell; if it
//     truncated the file, the receiver's reads past the new end would fault (SIGBUS).
//     Use blobs there only between processes that trust each other.
//   - Windows and everything else: New and Create return heap-backed Blobs (File is
//     nil) and Open fails with an error matching errors.ErrUnsupported. Send such a
//     payload inline; the receiver wraps it with FromBytes.
//
// A Blob is safe for concurrent readers. Close unmaps it: call Close when done, and
// not while others still use Bytes.
package blob

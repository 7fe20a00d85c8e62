//go:build unix

package ipc

import (
	"net"
	"os"
	"syscall"
)

// directWriter makes one non-blocking write(2) on a socket from whatever goroutine
// holds the Conn's send side (Conn.writing), so that a frame sent on an idle
// connection needs no switch to the writer goroutine. Its fields are the write's
// arguments and results: binding fn once keeps a write free of allocations.
type directWriter struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool
	buf []byte
	n   int
	err error
}

// init prepares w for nc's socket; false if nc is not a socket this works on.
func (w *directWriter) init(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	switch nc.(type) {
	case *net.UnixConn, *net.TCPConn:
	default:
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	w.rc = rc
	w.fn = w.once
	return true
}

// once is the RawConn.Write callback: one write, never a wait for writability.
func (w *directWriter) once(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), w.buf)
		switch err {
		case nil:
			w.n = n
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
		default:
			w.err = os.NewSyscallError("write", err)
		}
		return true
	}
}

// write writes what the socket takes of b at once. An error is the socket's; a short
// count (possibly 0) means the rest is for the writer goroutine, which waits for the
// socket, arms deadlines and notices the Conn's end: RawConn.Write fails before the
// write, for instance on an expired write deadline, and that too is left to the writer.
func (w *directWriter) write(b []byte) (int, error) {
	w.buf, w.n, w.err = b, 0, nil
	if err := w.rc.Write(w.fn); err != nil {
		w.buf = nil
		return 0, nil
	}
	n, err := w.n, w.err
	w.buf, w.err = nil, nil
	return n, err
}

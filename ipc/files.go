package ipc

import (
	"fmt"
	"net"
	"os"

	"github.com/cluster-client-go/cluster/frame"
)

// Descriptor passing: every descriptor has one owner. A caller's files are duplicated
// when a frame is queued, and the duplicates belong to the queue (wfds) until they are
// written or the Conn ends; received descriptors belong to the reader until their
// frame is dispatched, then to the Handler or the caller. Whoever owns a descriptor
// it cannot deliver closes it.

// fdFrame marks a queued frame that carries descriptors: wbuf[off:end] goes out in its
// own sendmsg with fds attached. The fds are the Conn's own duplicates of the caller's
// files; they are closed once written, or when the Conn ends without writing them.
type fdFrame struct {
	off, end int
	fds      []int
}

// CanPassFiles reports whether files can be sent and received on this Conn: it runs
// over a Unix socket, on Linux. Elsewhere SendParts and Call with files fail with
// ErrFDUnsupported.
func (c *Conn) CanPassFiles() bool { return canPassFiles(c.nc) }

// dupFiles duplicates the descriptors of files for the writer, after checking that they
// can be sent. Nil files give nil.
func (c *Conn) dupFiles(files []*os.File) ([]int, error) {
	if len(files) == 0 {
		return nil, nil
	}
	if !c.CanPassFiles() {
		return nil, fmt.Errorf("%w: %s (only Unix sockets on Linux pass them)", ErrFDUnsupported, describeConn(c.nc))
	}
	if len(files) > frame.MaxFDs {
		return nil, fmt.Errorf("%w: %d files, a frame passes at most %d", ErrTooManyFiles, len(files), frame.MaxFDs)
	}
	fds := make([]int, 0, len(files))
	for i, f := range files {
		fd, err := dupFile(f)
		if err != nil {
			closeFDs(fds)
			return nil, fmt.Errorf("duplicating file %d of %d (%v): %w", i+1, len(files), fileName(f), err)
		}
		fds = append(fds, fd)
	}
	return fds, nil
}

func fileName(f *os.File) string {
	if f == nil {
		return "nil"
	}
	return f.Name()
}

func describeConn(nc net.Conn) string {
	return fmt.Sprintf("%s connection to %v", nc.LocalAddr().Network(), nc.RemoteAddr())
}

// newFiles wraps received descriptors; nil for none.
func newFiles(fds []int) []*os.File {
	if len(fds) == 0 {
		return nil
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), fmt.Sprintf("fd %d from peer", fd))
	}
	return files
}

// closeFiles closes files the Conn received and could not deliver.
func closeFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

// checkFDKind is called for a frame that passes descriptors: only responses, and frames
// for a FileHandler, may.
func (c *Conn) checkFDKind(h frame.Header) error {
	switch h.Kind {
	case frame.KindResponse:
		return nil
	case frame.KindError, frame.KindPing, frame.KindPong, frame.KindHello, frame.KindWelcome:
		return fmt.Errorf("%w: %s frame declares %d file descriptors; only responses and requests pass descriptors", frame.ErrProtocol, h.Kind, h.FDs)
	}
	if c.opts.FileHandler == nil {
		return fmt.Errorf("%w: %s frame declares %d file descriptors, but this connection does not accept descriptors", frame.ErrProtocol, h.Kind, h.FDs)
	}
	return nil
}

package ipc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster/frame"
)

// fdReader is a Conn's reader on a Unix socket on Linux. It reads with recvmsg into its
// own buffer, so that descriptors passed with SCM_RIGHTS are seen (a bufio.Reader would
// drop them), and attaches each batch of descriptors to a frame by position in the byte
// stream:
//
// On Linux one recvmsg on a unix stream socket returns the descriptors of at most one
// sendmsg, and stops right after (or inside) the bytes of that sendmsg; the descriptors
// come with the first recvmsg that returns any of its bytes. The sender (writeWithFDs)
// starts a sendmsg with descriptors at the first byte of their frame and puts nothing
// but that frame in it. So a batch received with the bytes at stream offsets [s, e)
// belongs to the last frame whose first byte lies in [s, e): the frame F starting at o
// with size z owns the batch if s ≤ o < e ≤ o+z. Then:
//
//   - a frame declaring n > 0 descriptors must own exactly one batch of exactly n;
//   - a frame declaring 0 must own none;
//   - a batch that no frame owns (its bytes lie inside one frame, after its first byte)
//     is a violation;
//   - MSG_CTRUNC (the peer sent more than frame.MaxFDs at once, or our descriptor limit
//     was reached) is a violation.
//
// Each violation ends the Conn with an error matching frame.ErrProtocol. Every
// descriptor received and not delivered to its owner is closed, whatever the reason.
type fdReader struct {
	c  *Conn
	rc syscall.RawConn
	q  socketQueue

	buf  []byte
	r, w int    // buf[r:w] is received and not yet parsed
	next uint64 // stream offset of the next byte recvmsg returns

	batches []fdBatch // received and not yet attached, in stream order

	// The frame whose body is being read, [cur, curEnd), so that a batch arriving in
	// its interior is refused at once instead of piling up.
	inFrame     bool
	cur, curEnd uint64

	// recvmsg's arguments and results, kept here so that a read allocates nothing.
	dst    []byte
	oob    []byte
	msg    unix.Msghdr
	iov    unix.Iovec
	n      int
	oobn   int
	flags  int
	errno  error
	recvFn func(fd uintptr) bool
}

// fdBatch is the descriptors one recvmsg returned and the stream offsets [start, end)
// of the bytes it returned with them.
type fdBatch struct {
	start, end uint64
	fds        []int
}

// oobSize fits one SCM_RIGHTS message with the most descriptors a frame may pass.
var oobSize = unix.CmsgSpace(frame.MaxFDs * 4)

// newFDSource returns an fdReader for a Unix socket, and nil for other conns.
func newFDSource(c *Conn) frameSource {
	uc, ok := c.nc.(*net.UnixConn)
	if !ok {
		return nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil // the plain reader reports the broken conn
	}
	r := &fdReader{c: c, rc: rc, q: newSocketQueue(rc), buf: make([]byte, initialReadBufferSize), oob: make([]byte, oobSize)}
	r.recvFn = r.recvmsg
	return r
}

// recvmsg is the RawConn.Read callback: one recvmsg(2) into r.dst, without a source
// address (a Unix stream socket's peer is known; decoding it would allocate).
func (r *fdReader) recvmsg(fd uintptr) bool {
	r.iov.Base = &r.dst[0]
	r.iov.SetLen(len(r.dst))
	r.msg.Iov = &r.iov
	r.msg.SetIovlen(1)
	r.msg.Control = &r.oob[0]
	r.msg.SetControllen(len(r.oob))
	r.msg.Flags = 0
	for {
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.msg)), unix.MSG_CMSG_CLOEXEC)
		switch errno {
		case 0:
			r.n, r.oobn, r.flags, r.errno = int(n), int(r.msg.Controllen), int(r.msg.Flags), nil
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until readable
		default:
			r.n, r.oobn, r.flags, r.errno = 0, 0, 0, os.NewSyscallError("recvmsg", errno)
			return true
		}
	}
}

// recv reads into dst (non-empty) and records the descriptors that came with the bytes.
// It returns io.EOF at the end of the stream.
func (r *fdReader) recv(dst []byte) (int, error) {
	r.dst = dst
	err := r.rc.Read(r.recvFn)
	r.dst = nil
	if err == nil {
		err = r.errno
	}
	if err != nil {
		return 0, err
	}
	n := r.n
	r.c.bytesIn.Add(uint64(n))
	start := r.next
	r.next += uint64(n)
	if r.oobn > 0 || r.flags&unix.MSG_CTRUNC != 0 {
		if err := r.addBatch(start, r.next); err != nil {
			return n, err
		}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// addBatch records the descriptors in r.oob, returned with the bytes [start, end).
func (r *fdReader) addBatch(start, end uint64) error {
	fds, perr := parseRights(r.oob[:r.oobn])
	switch {
	case r.flags&unix.MSG_CTRUNC != 0:
		closeFDs(fds)
		return fmt.Errorf("%w: control data truncated (MSG_CTRUNC): the peer passed more than %d descriptors at once, or this process ran out of descriptors", frame.ErrProtocol, frame.MaxFDs)
	case perr != nil:
		closeFDs(fds)
		return fmt.Errorf("%w: malformed control data: %w", frame.ErrProtocol, perr)
	case len(fds) == 0:
		return nil
	case start == end:
		closeFDs(fds)
		return fmt.Errorf("%w: %d descriptors arrived without data", frame.ErrProtocol, len(fds))
	}
	r.batches = append(r.batches, fdBatch{start: start, end: end, fds: fds})
	if r.inFrame && start > r.cur && end <= r.curEnd {
		return fmt.Errorf("%w: %d descriptors arrived inside the bytes of a frame, not with its first byte", frame.ErrProtocol, len(fds))
	}
	return nil
}

// parseRights returns every descriptor in the SCM_RIGHTS messages of oob; other
// control messages are ignored. On error it returns the descriptors it could parse.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&msgs[i])
		fds = append(fds, got...)
		if err != nil {
			return fds, err
		}
	}
	return fds, nil
}

// fill reads until at least need (≤ len(r.buf)) bytes are buffered.
func (r *fdReader) fill(need int) error {
	for r.w-r.r < need {
		if r.r == r.w {
			r.r, r.w = 0, 0
		} else if len(r.buf)-r.r < need {
			r.w = copy(r.buf, r.buf[r.r:r.w])
			r.r = 0
		}
		n, err := r.recv(r.buf[r.w:])
		r.w += n
		if err != nil {
			return err
		}
		if r.w == len(r.buf) && len(r.buf) < readBufferSize {
			// The read filled the buffer: the peer sends faster than one read a
			// wake-up takes; read more per syscall from now on.
			b := make([]byte, readBufferSize)
			r.w = copy(b, r.buf[r.r:r.w])
			r.r, r.buf = 0, b
		}
	}
	return nil
}

// readSome reads the next bytes of the stream into dst (non-empty): the buffered ones
// if there are any, else straight from the socket when dst is at least a buffer's
// worth, else through the buffer (which may then hold the start of the next frames).
func (r *fdReader) readSome(dst []byte) (int, error) {
	if r.r == r.w {
		if len(dst) >= len(r.buf) {
			return r.recv(dst)
		}
		if err := r.fill(1); err != nil {
			return 0, err
		}
	}
	n := copy(dst, r.buf[r.r:r.w])
	r.r += n
	return n, nil
}

// offset is the stream offset of buf[r].
func (r *fdReader) offset() uint64 { return r.next - uint64(r.w-r.r) }

// header reads the next frame's header and attaches its descriptors (see attach).
func (r *fdReader) header() (frame.Header, []int, error) {
	if err := r.fill(frame.HeaderSize); err != nil {
		if errors.Is(err, io.EOF) && r.w > r.r {
			return frame.Header{}, nil, fmt.Errorf("%w: connection ended inside a frame header (%d of %d bytes)", frame.ErrProtocol, r.w-r.r, frame.HeaderSize)
		}
		return frame.Header{}, nil, err
	}
	h, err := frame.ParseHeader(r.buf[r.r:r.r+frame.HeaderSize], r.c.opts.Limits)
	if err != nil {
		return frame.Header{}, nil, err
	}
	fds, err := r.attach(r.offset(), uint64(h.Size()), h)
	if err != nil {
		return frame.Header{}, nil, err
	}
	r.r += frame.HeaderSize
	return h, fds, nil
}

func (r *fdReader) buffered() int { return r.w - r.r }

func (r *fdReader) arrived() int { return r.w - r.r + r.q.queued() }

func (r *fdReader) frameDone() bool {
	r.inFrame = false
	return r.w > r.r
}

// discard closes the descriptors of batches not attached to a frame.
func (r *fdReader) discard() {
	for _, b := range r.batches {
		closeFDs(b.fds)
	}
	r.batches = nil
}

// attach finds the batch the frame h, at stream offset start and size bytes long,
// owns under the rule in fdReader's doc, checks it against h.FDs and returns its
// descriptors (nil if none).
func (r *fdReader) attach(start, size uint64, h frame.Header) ([]int, error) {
	end := start + size
	var fds []int
	if len(r.batches) > 0 {
		b := r.batches[0]
		switch {
		case b.end <= start:
			// Cannot happen: addBatch and the check below refuse such batches first.
			return nil, fmt.Errorf("%w: %d descriptors arrived inside the bytes of a frame, not with its first byte", frame.ErrProtocol, len(b.fds))
		case b.start <= start && end >= b.end:
			fds = b.fds
			r.batches[0] = fdBatch{}
			r.batches = r.batches[1:]
		}
	}
	if len(r.batches) > 0 {
		if b := r.batches[0]; b.start > start && b.end <= end {
			closeFDs(fds)
			return nil, fmt.Errorf("%w: %d descriptors arrived inside the bytes of a %s frame, not with its first byte", frame.ErrProtocol, len(b.fds), h.Kind)
		}
	}
	if len(r.batches) == 0 {
		r.batches = nil // let the backing array go
	}
	var err error
	switch {
	case int(h.FDs) == len(fds):
		if h.FDs != 0 {
			err = r.c.checkFDKind(h)
		}
	case len(fds) == 0:
		err = fmt.Errorf("%w: %s frame declares %d file descriptors, but none arrived with its first byte", frame.ErrProtocol, h.Kind, h.FDs)
	case h.FDs == 0:
		err = fmt.Errorf("%w: %d file descriptors arrived with a %s frame that declares none", frame.ErrProtocol, len(fds), h.Kind)
	default:
		err = fmt.Errorf("%w: %s frame declares %d file descriptors, but %d arrived with it", frame.ErrProtocol, h.Kind, h.FDs, len(fds))
	}
	if err != nil {
		closeFDs(fds)
		return nil, err
	}
	r.inFrame, r.cur, r.curEnd = true, start, end
	return fds, nil
}

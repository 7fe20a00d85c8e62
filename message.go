package cluster

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/cluster-client-go/cluster/blob"
	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/ipc"
)

// Message is what travels through the cluster: a payload (Data), optionally a large
// immutable payload in shared memory (Blob), and optionally open files (Files).
//
// Blob is how large payloads move without a copy per hop: on a Unix socket (Linux) its
// sealed memfd is passed as a file descriptor and every receiver maps the same physical
// pages read-only; the Leader fans one blob out to all subscribers without copying it.
// On a connection that cannot pass descriptors (TCP, or off Linux) the blob's bytes are
// sent inline instead, transparently: the receiver still gets a Blob (heap-backed), and
// the frame must then fit the receiver's Config.MaxBody. Make one with blob.New or
// blob.Create.
//
// Files are passed as descriptors (SCM_RIGHTS): a pipe, a socket, an open file. The
// receiver gets its own descriptors for the same open files. They need a connection that
// passes descriptors: with the TCP transport, or off Linux, a Message with Files fails
// with ErrFDUnsupported, whatever the member's role, so code behaves the same on every
// member. A frame passes at most 16 descriptors, the Blob's included.
//
// Ownership, which matters only for Blob and Files (Data is garbage collected):
//   - What you send (Invoke, InvokeOneway, Publish) stays yours: the library duplicates
//     what it passes before the call returns. Close it when you no longer need it.
//   - What a call returns to you (Invoke's response, Clone's result) is yours: Close it.
//   - What the library lends you (a request or published Message given to your Service,
//     a Message given to a subscription callback or returned by Subscription.First) is
//     valid until the Service method or callback returns (for First: while the
//     Subscription is open). Its Close does nothing; Clone it to keep it longer.
//   - What your Service returns from Invoke, or passes to emit, is given to the library,
//     which closes it once it is sent and no subscriber needs it any more. Return or emit
//     a Message you own (Clone the request to echo it back).
//
// A Message handed to a subscriber is shared with the other subscribers of the topic:
// treat Data as read-only. A Blob's bytes are read-only memory: writing to them crashes
// the program.
type Message struct {
	Data  []byte
	Blob  *blob.Blob
	Files []*os.File

	// lease is set on a Message the library lends out, whose Close therefore does
	// nothing. Either the library shares the Message's resources between holders and
	// the lease counts them (lease.msg set: the last release closes them), or the
	// owner lent it for a call (lease.msg nil: nothing is freed). See lend and own.
	lease *lease
}

// lease counts the library's holders of a Message's Blob and Files. The resources are
// closed when the count drops to zero. A lease with a nil msg marks a Message lent
// by its owner (the caller's own Message on the Leader's local path): nothing to free.
type lease struct {
	n   atomic.Int64
	msg *Message
}

// hasResources reports whether m carries a Blob or Files.
func (m Message) hasResources() bool { return m.Blob != nil || len(m.Files) > 0 }

// Close releases the Message's Blob and Files when it owns them (see Message for who
// owns what); on a Message the library lent it does nothing. It returns the first error.
func (m Message) Close() error {
	if m.lease != nil {
		return nil
	}
	return m.closeResources()
}

func (m Message) closeResources() error {
	var err error
	if m.Blob != nil {
		err = m.Blob.Close()
	}
	for _, f := range m.Files {
		if f == nil {
			continue
		}
		if cerr := f.Close(); err == nil && cerr != nil && !errors.Is(cerr, os.ErrClosed) {
			err = cerr
		}
	}
	return err
}

// Clone returns a Message with the same contents whose Blob and Files have lifetimes of
// their own: descriptors are duplicated and a shared-memory Blob is mapped again (the
// same physical pages: nothing is copied). Data is shared, not copied. The caller owns
// the clone and must Close it.
func (m Message) Clone() (Message, error) {
	out := Message{Data: m.Data}
	if m.Blob != nil {
		b, err := cloneBlob(m.Blob)
		if err != nil {
			return Message{}, fmt.Errorf("cluster: cloning a message's blob: %w", err)
		}
		out.Blob = b
	}
	for i, f := range m.Files {
		d, err := dupFile(f)
		if err != nil {
			_ = out.closeResources()
			return Message{}, fmt.Errorf("cluster: cloning a message's file %d of %d: %w", i+1, len(m.Files), err)
		}
		out.Files = append(out.Files, d)
	}
	return out, nil
}

func cloneBlob(b *blob.Blob) (*blob.Blob, error) {
	data := b.Bytes()
	if data == nil {
		return nil, fmt.Errorf("the blob is closed: %w", os.ErrClosed)
	}
	if b.File() == nil {
		return blob.FromBytes(data), nil // immutable heap memory: share it
	}
	f, err := dupFile(b.File())
	if err != nil {
		return nil, err
	}
	return blob.Open(f)
}

// lend marks m as lent by its owner: holders' Close does nothing and nothing is freed.
func lend(m Message) Message {
	if m.hasResources() && m.lease == nil {
		m.lease = &lease{}
	}
	return m
}

// own puts m's resources under a lease held once by the caller, who releases it; a
// Message without resources needs none. A Message that is already lent to the caller
// is cloned first, so that the library's lease never frees what someone else owns.
func own(m Message) (Message, error) {
	if !m.hasResources() {
		return m, nil
	}
	if m.lease != nil {
		c, err := m.Clone()
		if err != nil {
			return Message{}, err
		}
		m = c
	}
	l := &lease{}
	l.n.Store(1)
	m.lease = l
	l.msg = &Message{Blob: m.Blob, Files: m.Files}
	return m, nil
}

// retain adds a holder to m's lease, if it has one that frees.
func retain(m Message) {
	if m.lease != nil && m.lease.msg != nil {
		m.lease.n.Add(1)
	}
}

// release drops a holder of m's lease; the last one frees the resources.
func release(m Message) {
	if m.lease != nil && m.lease.msg != nil && m.lease.n.Add(-1) == 0 {
		_ = m.lease.msg.closeResources()
	}
}

// wire is a Message encoded for one connection: the header flags, the body (in two
// parts, body then tail, sent as one: see ipc.Conn.SendParts) and the files to pass.
type wire struct {
	flags      frame.Flags
	body, tail []byte
	files      []*os.File
}

// encodeMessage encodes m for conn. A Blob goes as a descriptor when conn passes them,
// else inline; Files need a connection that passes descriptors. maxBody is the
// receiver's limit; op, name and what ("the request") name m for errors.
func encodeMessage(conn *ipc.Conn, m Message, maxBody int, op, name, what string) (wire, error) {
	fdOK := conn.CanPassFiles()
	if err := checkWire(m, fdOK, maxBody, op, name, what); err != nil {
		return wire{}, err
	}
	w := wire{body: m.Data, files: m.Files}
	if m.Blob == nil {
		return w, nil
	}
	if fdOK && m.Blob.File() != nil {
		w.flags = frame.FlagBlob
		w.files = append(make([]*os.File, 0, 1+len(m.Files)), m.Blob.File())
		w.files = append(w.files, m.Files...)
		return w, nil
	}
	// The blob's bytes go as the body's tail, copied only into the connection's queue:
	// a Blob costs what the same bytes as Data do.
	w.flags = frame.FlagInlineBlob
	w.body = frame.AppendInlineBlob(make([]byte, 0, frame.InlineBlobHeaderSize+len(m.Data)), m.Data, nil)
	w.tail = m.Blob.Bytes()
	return w, nil
}

// checkWire says whether m can travel to a receiver whose limit is maxBody, on a
// connection that passes descriptors (fdOK) or not, as encodeMessage would send it. It
// is the one check of a payload's size: a Leader applies it to its own calls too, so
// that what works in one process works across processes.
func checkWire(m Message, fdOK bool, maxBody int, op, name, what string) error {
	for i, f := range m.Files {
		if f == nil {
			return fmt.Errorf("%w: %s %q: %s's Message.Files[%d] is nil", ErrConfig, op, name, what, i)
		}
	}
	if len(m.Files) > 0 && !fdOK {
		return &detailError{is: ErrFDUnsupported, msg: fmt.Sprintf(
			"cluster: %s %q: %s has Files, which need a connection that passes file descriptors (%s; use the Unix transport on Linux, or send the data inline)", op, name, what, noFDsWhy())}
	}
	if fds := len(m.Files); fds > 0 && m.Blob != nil && m.Blob.File() != nil {
		if fds+1 > frame.MaxFDs {
			return tooLarge("cluster: %s %q: %s passes %d files and a Blob, which count as %d descriptors, over the limit of %d", op, name, what, fds, fds+1, frame.MaxFDs)
		}
	} else if fds > frame.MaxFDs {
		return tooLarge("cluster: %s %q: %s passes %d files, over the limit of %d descriptors", op, name, what, fds, frame.MaxFDs)
	}
	n := len(m.Data)
	if m.Blob != nil {
		data := m.Blob.Bytes()
		if data == nil {
			return fmt.Errorf("cluster: %s %q: the Message's Blob is closed: %w", op, name, os.ErrClosed)
		}
		if !fdOK || m.Blob.File() == nil {
			if n = frame.InlineBlobHeaderSize + len(m.Data) + len(data); n > maxBody {
				return tooLarge("cluster: %s %q: its Blob travels inline (%s), so %s is %d bytes, over the receiver's limit of %d "+
					"(Config.MaxBody: raise it on every member, or use the Unix transport on Linux, where a Blob passes as a descriptor)",
					op, name, blobInlineWhy(fdOK), what, n, maxBody)
			}
		}
	}
	if n > maxBody {
		return tooLarge("cluster: %s %q: %s is %d bytes, over the receiver's limit of %d "+
			"(Config.MaxBody: raise it on every member, or send large payloads as a Message.Blob)", op, name, what, n, maxBody)
	}
	return nil
}

// checkBlobSize is the receiver's bound on a Blob passed as a descriptor.
func checkBlobSize(m Message, fdOK bool, maxBlob int, op, name, what string) error {
	if m.Blob == nil || !fdOK || m.Blob.File() == nil || m.Blob.Len() <= maxBlob {
		return nil
	}
	return tooLarge("cluster: %s %q: %s: the Blob is %d bytes, over the receiver's Config.MaxBlob of %d (raise it on every member)", op, name, what, m.Blob.Len(), maxBlob)
}

// responseErr is what the caller of invoke gets when the Service's response to method
// cannot travel (err from checkWire or checkBlobSize; nil stays nil): the size errors as
// they are (ErrTooLarge), any other as a RemoteError, the same in every role.
func responseErr(err error, method string) error {
	if err == nil || errors.Is(err, ErrTooLarge) {
		return err
	}
	msg := strings.TrimPrefix(err.Error(), fmt.Sprintf("cluster: invoke %q: ", method))
	return &RemoteError{Op: "invoke", Name: method, Message: msg}
}

func noFDsWhy() string {
	if runtime.GOOS != "linux" {
		return "descriptors pass only on Linux"
	}
	return "this one uses the TCP transport"
}

func blobInlineWhy(fdOK bool) string {
	if fdOK {
		return "it is not backed by shared memory"
	}
	return noFDsWhy()
}

// decodeMessage builds the Message a frame carries, taking ownership of files (it
// closes them on error). maxBlob bounds a received blob's size.
func decodeMessage(f frame.Frame, files []*os.File, maxBlob int) (Message, error) {
	m := Message{Data: f.Body}
	switch {
	case f.Flags&frame.FlagBlob != 0:
		if len(files) == 0 { // ipc delivers as many files as the header declares
			return Message{}, fmt.Errorf("%w: %s frame flagged blob without a descriptor", frame.ErrProtocol, f.Kind)
		}
		b, err := blob.Open(files[0])
		if err != nil {
			closeFiles(files[1:])
			return Message{}, fmt.Errorf("%w: %s frame's blob: %w", frame.ErrProtocol, f.Kind, err)
		}
		if b.Len() > maxBlob {
			n := b.Len()
			_ = b.Close()
			closeFiles(files[1:])
			return Message{}, tooLarge("the Blob is %d bytes, over the receiver's Config.MaxBlob of %d (raise it on every member)", n, maxBlob)
		}
		m.Blob, files = b, files[1:]
	case f.Flags&frame.FlagInlineBlob != 0:
		data, bb, err := frame.SplitInlineBlob(f.Body)
		if err != nil {
			closeFiles(files)
			return Message{}, err
		}
		m.Data, m.Blob = data, blob.FromBytes(bb)
	}
	if len(files) > 0 {
		m.Files = files
	}
	return m, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

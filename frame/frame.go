package frame

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
)

// Version is the only protocol version this package speaks. It is the first byte of
// every frame.
const Version uint8 = 1

// HeaderSize is the length in bytes of the fixed frame header.
const HeaderSize = 24

// Limits on what a frame may carry. DefaultMaxMeta and DefaultMaxBody apply when the
// corresponding [Limits] field is zero; MaxFDs is fixed by the protocol.
const (
	DefaultMaxMeta = 64 << 10 // 64 KiB
	DefaultMaxBody = 16 << 20 // 16 MiB
	MaxFDs         = 16       // file descriptors per frame
)

// Limits bounds the frames a receiver accepts. The zero value means the defaults.
type Limits struct {
	MaxMeta uint32 // longest meta accepted; 0 means DefaultMaxMeta
	MaxBody uint32 // longest body accepted; 0 means DefaultMaxBody
}

func (l Limits) maxMeta() uint32 {
	if l.MaxMeta == 0 {
		return DefaultMaxMeta
	}
	return l.MaxMeta
}

func (l Limits) maxBody() uint32 {
	if l.MaxBody == 0 {
		return DefaultMaxBody
	}
	return l.MaxBody
}

// Kind is the type of a frame: the second byte of the header. The values are part of
// the wire format and never change.
type Kind uint8

// Frame kinds. SPEC.md says what each one's id, timeout, meta and body mean.
const (
	KindHello       Kind = 1  // follower → leader, first frame: body is a Hello
	KindWelcome     Kind = 2  // leader → follower, answers hello: body is a Welcome
	KindInvoke      Kind = 3  // request: meta is the method, body the argument
	KindOneway      Kind = 4  // like invoke, but no response is sent
	KindResponse    Kind = 5  // success answer to the request with the same id
	KindError       Kind = 6  // failure answer: meta is a Code, body a message
	KindSubscribe   Kind = 7  // meta is the topic
	KindUnsubscribe Kind = 8  // meta is the topic
	KindMessage     Kind = 9  // leader → follower: a published message on meta's topic
	KindPublish     Kind = 10 // follower → leader: publish body on meta's topic
	KindPing        Kind = 11 // liveness probe; answered by a pong with the same id
	KindPong        Kind = 12 // answer to a ping
	KindGoodbye     Kind = 13 // leader → follower: handing over, send no new requests
	KindRegister    Kind = 14 // follower → leader: a remembered publish; body is a RegisterBody
	KindWithdraw    Kind = 15 // follower → leader: take back a registration; body is its 8-byte id
	KindStatus      Kind = 16 // follower or observer → leader: answered by a response whose body is the status document (JSON)
	KindWatch       Kind = 17 // observer → leader: answered by a response, then event frames until the connection ends
	KindEvent       Kind = 18 // leader → observer: meta is the event's type, body its JSON
)

var kindNames = [...]string{
	KindHello:       "hello",
	KindWelcome:     "welcome",
	KindInvoke:      "invoke",
	KindOneway:      "oneway",
	KindResponse:    "response",
	KindError:       "error",
	KindSubscribe:   "subscribe",
	KindUnsubscribe: "unsubscribe",
	KindMessage:     "message",
	KindPublish:     "publish",
	KindPing:        "ping",
	KindPong:        "pong",
	KindGoodbye:     "goodbye",
	KindRegister:    "register",
	KindWithdraw:    "withdraw",
	KindStatus:      "status",
	KindWatch:       "watch",
	KindEvent:       "event",
}

// String returns the kind's lower-case name, or "kind(N)" for an unknown kind.
func (k Kind) String() string {
	if k.Valid() {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Valid reports whether k is a kind defined by this protocol version.
func (k Kind) Valid() bool { return k >= KindHello && k <= KindEvent }

// Flags is the third byte of the header. Each flag is defined for some kinds only; a
// frame with a bit set that its kind does not define is a protocol violation.
type Flags uint8

const (
	// FlagShared, on a message frame, says the message is for exactly one of the
	// receiving process's shared (work-sharing) subscribers of the topic, not for all
	// of its broadcast subscribers.
	FlagShared Flags = 1 << 0
	// FlagBlob says the frame's first file descriptor is a blob: a sealed memfd holding
	// the payload's large part, mapped read-only by the receiver. The body is the
	// payload's inline part as usual.
	FlagBlob Flags = 1 << 1
	// FlagInlineBlob says the payload carries a blob sent inline, on a connection that
	// cannot pass descriptors: the body is the inline part's length (4 bytes,
	// big-endian), the inline part, then the blob's bytes. See SplitInlineBlob.
	FlagInlineBlob Flags = 1 << 2
)

// AllowedFlags returns the flags defined for kind k.
func AllowedFlags(k Kind) Flags {
	switch k {
	case KindMessage:
		return FlagShared | FlagBlob | FlagInlineBlob
	case KindInvoke, KindOneway, KindResponse, KindPublish:
		return FlagBlob | FlagInlineBlob
	}
	return 0
}

// SubscribeShared is the one byte of the body of a subscribe or unsubscribe frame that
// names the process's shared subscription of the topic (an empty body names its
// broadcast one).
const SubscribeShared byte = 1

// Header is the fixed 24-byte header that starts every frame. All integers are
// big-endian.
type Header struct {
	Version uint8  // protocol version: Version
	Kind    Kind   // what the frame is
	Flags   Flags  // the flags defined for Kind (AllowedFlags); any other bit is a protocol violation
	FDs     uint8  // file descriptors passed alongside the frame (SCM_RIGHTS), ≤ MaxFDs
	ID      uint64 // request id; a response or error carries the id of its request
	Timeout uint32 // milliseconds the sender will wait for the answer; 0 = none
	MetaLen uint32 // bytes of meta after the header
	BodyLen uint32 // bytes of body after the meta
}

// Put encodes h into b[:HeaderSize]. It panics if len(b) < HeaderSize, like
// binary.BigEndian.PutUint64. It writes the fields as they are, without validation.
func (h *Header) Put(b []byte) {
	_ = b[HeaderSize-1] // one bounds check
	b[0] = h.Version
	b[1] = byte(h.Kind)
	b[2] = byte(h.Flags)
	b[3] = h.FDs
	binary.BigEndian.PutUint64(b[4:], h.ID)
	binary.BigEndian.PutUint32(b[12:], h.Timeout)
	binary.BigEndian.PutUint32(b[16:], h.MetaLen)
	binary.BigEndian.PutUint32(b[20:], h.BodyLen)
}

// Append appends the HeaderSize encoded bytes of h to dst and returns the extended
// slice. It writes the fields as they are, without validation.
func (h *Header) Append(dst []byte) []byte {
	dst = append(dst, h.Version, byte(h.Kind), byte(h.Flags), h.FDs)
	dst = binary.BigEndian.AppendUint64(dst, h.ID)
	dst = binary.BigEndian.AppendUint32(dst, h.Timeout)
	dst = binary.BigEndian.AppendUint32(dst, h.MetaLen)
	return binary.BigEndian.AppendUint32(dst, h.BodyLen)
}

// Size returns the length of the whole frame: HeaderSize + MetaLen + BodyLen.
func (h *Header) Size() int { return HeaderSize + int(h.MetaLen) + int(h.BodyLen) }

// ParseHeader decodes b[:HeaderSize] and validates it against lim, so a caller can
// reject a frame before allocating or reading its meta and body. It does not allocate
// unless it returns an error. The checks, in order:
//
//   - len(b) < HeaderSize: io.ErrUnexpectedEOF;
//   - a version other than Version: ErrVersion (which also matches ErrProtocol);
//   - an unknown kind, any flag bit, or more than MaxFDs descriptors: ErrProtocol;
//   - a meta or body longer than lim allows: ErrTooLarge.
//
// The error names the field, the value received and the limit.
func ParseHeader(b []byte, lim Limits) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("frame: header is %d bytes, need %d: %w", len(b), HeaderSize, io.ErrUnexpectedEOF)
	}
	h := Header{
		Version: b[0],
		Kind:    Kind(b[1]),
		Flags:   Flags(b[2]),
		FDs:     b[3],
		ID:      binary.BigEndian.Uint64(b[4:]),
		Timeout: binary.BigEndian.Uint32(b[12:]),
		MetaLen: binary.BigEndian.Uint32(b[16:]),
		BodyLen: binary.BigEndian.Uint32(b[20:]),
	}
	switch {
	case h.Version != Version:
		return Header{}, fmt.Errorf("frame: received protocol version %d, this side speaks version %d: %w", h.Version, Version, ErrVersion)
	case !h.Kind.Valid():
		return Header{}, fmt.Errorf("frame: unknown frame kind %d: %w", uint8(h.Kind), ErrProtocol)
	case h.Flags&^AllowedFlags(h.Kind) != 0:
		return Header{}, fmt.Errorf("frame: %s frame has flags 0x%02x, but only 0x%02x are defined for it: %w", h.Kind, uint8(h.Flags), uint8(AllowedFlags(h.Kind)), ErrProtocol)
	case h.Flags&(FlagBlob|FlagInlineBlob) == FlagBlob|FlagInlineBlob:
		return Header{}, fmt.Errorf("frame: %s frame is flagged both blob and inline blob: %w", h.Kind, ErrProtocol)
	case h.Flags&FlagBlob != 0 && h.FDs == 0:
		return Header{}, fmt.Errorf("frame: %s frame is flagged blob but passes no file descriptor: %w", h.Kind, ErrProtocol)
	case h.FDs > MaxFDs:
		return Header{}, fmt.Errorf("frame: %s frame declares %d file descriptors, the limit is %d: %w", h.Kind, h.FDs, MaxFDs, ErrProtocol)
	case h.MetaLen > lim.maxMeta():
		return Header{}, fmt.Errorf("frame: %s frame meta is %d bytes, the limit is %d: %w", h.Kind, h.MetaLen, lim.maxMeta(), ErrTooLarge)
	case h.BodyLen > lim.maxBody():
		return Header{}, fmt.Errorf("frame: %s frame body is %d bytes, the limit is %d: %w", h.Kind, h.BodyLen, lim.maxBody(), ErrTooLarge)
	}
	return h, nil
}

// Frame is one decoded frame. Meta is the method, topic or error code (UTF-8) and Body
// the payload; either is nil when its length is zero.
type Frame struct {
	Header
	Meta []byte
	Body []byte
}

// AppendFrame appends a frame with header h, meta and body to dst and returns the
// extended slice. It sets h.Version to Version and h.MetaLen and h.BodyLen from the
// arguments, so callers fill in only Kind, Flags, FDs, ID and Timeout; it does not
// validate them. It panics if meta or body is 4 GiB or longer, which no frame can
// carry; Write returns an error instead.
func AppendFrame(dst []byte, h Header, meta, body []byte) []byte {
	return AppendFrameParts(dst, h, meta, body, nil)
}

// AppendFrameParts is AppendFrame for a body in two parts, body then tail, which the
// frame carries as one body: a large tail is copied once, into dst.
func AppendFrameParts(dst []byte, h Header, meta, body, tail []byte) []byte {
	if err := checkLens(meta, body, tail); err != nil {
		panic(err)
	}
	h.Version, h.MetaLen, h.BodyLen = Version, uint32(len(meta)), uint32(len(body)+len(tail))
	dst = h.Append(dst)
	dst = append(dst, meta...)
	dst = append(dst, body...)
	return append(dst, tail...)
}

func checkLens(meta, body, tail []byte) error {
	if n := uint64(len(body)) + uint64(len(tail)); uint64(len(meta)) > math.MaxUint32 || n > math.MaxUint32 {
		return fmt.Errorf("frame: meta of %d bytes and body of %d bytes, a frame carries at most %d each: %w", len(meta), n, uint64(math.MaxUint32), ErrTooLarge)
	}
	return nil
}

// headerBufs holds header buffers for Read: a local array would escape to the heap
// through the io.Reader, costing a second allocation per frame.
var headerBufs = sync.Pool{New: func() any { return new([HeaderSize]byte) }}

// Read reads exactly one frame from r, blocking as long as r does. The header is
// validated with ParseHeader (see there for the errors) before anything else is read or
// allocated; the meta and body are then read into one allocation that Meta and Body
// share (Meta's capacity ends where Body starts). Read does not buffer: it never reads
// past the end of the frame.
//
// If r ends before the first byte, Read returns io.EOF itself. If r ends inside the
// frame, the error wraps io.ErrUnexpectedEOF and says what was being read. Errors
// from r are returned wrapped.
func Read(r io.Reader, lim Limits) (Frame, error) {
	hb := headerBufs.Get().(*[HeaderSize]byte)
	defer headerBufs.Put(hb)
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("frame: reading header: %w", err)
	}
	h, err := ParseHeader(hb[:], lim)
	if err != nil {
		return Frame{}, err
	}
	f := Frame{Header: h}
	n := int(h.MetaLen) + int(h.BodyLen)
	if n == 0 {
		return f, nil
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("frame: reading %s frame meta and body (%d bytes): %w", h.Kind, n, err)
	}
	if h.MetaLen > 0 {
		f.Meta = buf[:h.MetaLen:h.MetaLen]
	}
	if h.BodyLen > 0 {
		f.Body = buf[h.MetaLen:]
	}
	return f, nil
}

// Write encodes one frame with AppendFrame and writes it with a single w.Write. It
// blocks as long as w does; goroutines sharing w must serialise their calls. A meta or
// body of 4 GiB or longer is an error matching ErrTooLarge.
func Write(w io.Writer, h Header, meta, body []byte) error {
	if err := checkLens(meta, body, nil); err != nil {
		return err
	}
	buf := AppendFrame(make([]byte, 0, HeaderSize+len(meta)+len(body)), h, meta, body)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("frame: writing %s frame: %w", h.Kind, err)
	}
	return nil
}

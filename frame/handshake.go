package frame

import (
	"encoding/binary"
	"fmt"
)

// Bounds on the variable-length fields of the handshake bodies.
const (
	MaxName  = 255 // bytes in Hello.Name and Welcome.Name
	MaxToken = 256 // bytes in Hello.Token
)

// Hello is the body of the KindHello frame, the first frame a follower sends. Encoded
// big-endian: MinVersion u8, MaxVersion u8, PID u32, MaxBody u32, then Name and Token,
// each as a u16 length followed by that many bytes.
type Hello struct {
	MinVersion, MaxVersion uint8  // the protocol versions the sender speaks: 1 ≤ Min ≤ Max
	PID                    uint32 // sender's pid; advisory only, pids collide across pid namespaces
	MaxBody                uint32 // largest frame body the sender accepts
	Name                   string // the cluster Name the follower joined; the leader rejects a mismatch
	Token                  []byte // auth token for the TCP transport; empty on Unix sockets
}

// Append appends the encoded hello to dst and returns the extended slice. It panics if
// Name is longer than MaxName or Token longer than MaxToken: callers validate those.
func (h *Hello) Append(dst []byte) []byte {
	mustFit("Hello.Name", len(h.Name), MaxName)
	mustFit("Hello.Token", len(h.Token), MaxToken)
	dst = append(dst, h.MinVersion, h.MaxVersion)
	dst = binary.BigEndian.AppendUint32(dst, h.PID)
	dst = binary.BigEndian.AppendUint32(dst, h.MaxBody)
	dst = appendField(dst, h.Name)
	return appendField(dst, h.Token)
}

// ParseHello decodes a hello body. A truncated body, trailing bytes, an overlong Name
// or Token, a MinVersion of 0 or a MinVersion above MaxVersion is an error matching
// ErrProtocol; versions that merely differ from Version are not an error here. Token
// does not alias b. ParseHello never panics.
func ParseHello(b []byte) (Hello, error) {
	p := parser{b: b, what: "hello"}
	h := Hello{
		MinVersion: p.u8("min version"),
		MaxVersion: p.u8("max version"),
		PID:        p.u32("pid"),
		MaxBody:    p.u32("max body"),
		Name:       string(p.field("name", MaxName)),
	}
	if tok := p.field("token", MaxToken); len(tok) > 0 {
		h.Token = append([]byte(nil), tok...)
	}
	if err := p.done(); err != nil {
		return Hello{}, err
	}
	if h.MinVersion == 0 || h.MinVersion > h.MaxVersion {
		return Hello{}, fmt.Errorf("frame: hello version range %d..%d is empty or includes 0: %w", h.MinVersion, h.MaxVersion, ErrProtocol)
	}
	return h, nil
}

// Welcome is the body of the KindWelcome frame, the leader's answer to a hello. Encoded
// big-endian: Version u8, PID u32, MaxBody u32, Term u64, then Name as a u16 length
// followed by that many bytes.
type Welcome struct {
	Version uint8  // the protocol version chosen for the connection; never 0
	PID     uint32 // leader's pid; advisory only
	MaxBody uint32 // largest frame body the leader accepts
	Term    uint64 // leadership term number
	Name    string // the cluster Name the leader serves
}

// Append appends the encoded welcome to dst and returns the extended slice. It panics if
// Name is longer than MaxName: callers validate it.
func (w *Welcome) Append(dst []byte) []byte {
	mustFit("Welcome.Name", len(w.Name), MaxName)
	dst = append(dst, w.Version)
	dst = binary.BigEndian.AppendUint32(dst, w.PID)
	dst = binary.BigEndian.AppendUint32(dst, w.MaxBody)
	dst = binary.BigEndian.AppendUint64(dst, w.Term)
	return appendField(dst, w.Name)
}

// ParseWelcome decodes a welcome body. A truncated body, trailing bytes, an overlong
// Name or a Version of 0 is an error matching ErrProtocol. ParseWelcome never panics.
func ParseWelcome(b []byte) (Welcome, error) {
	p := parser{b: b, what: "welcome"}
	w := Welcome{
		Version: p.u8("version"),
		PID:     p.u32("pid"),
		MaxBody: p.u32("max body"),
		Term:    p.u64("term"),
		Name:    string(p.field("name", MaxName)),
	}
	if err := p.done(); err != nil {
		return Welcome{}, err
	}
	if w.Version == 0 {
		return Welcome{}, fmt.Errorf("frame: welcome chooses protocol version 0: %w", ErrProtocol)
	}
	return w, nil
}

func mustFit(field string, n, limit int) {
	if n > limit {
		panic(fmt.Sprintf("frame: %s is %d bytes, the limit is %d", field, n, limit))
	}
}

func appendField[T string | []byte](dst []byte, s T) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// parser reads the big-endian fields of a handshake body in order and keeps the first
// error; after an error every read returns zero.
type parser struct {
	b    []byte
	what string // "hello" or "welcome", for messages
	err  error
}

func (p *parser) take(n int, field string) []byte {
	if p.err != nil {
		return nil
	}
	if len(p.b) < n {
		p.err = fmt.Errorf("frame: %s body truncated: %s needs %d bytes, %d left: %w", p.what, field, n, len(p.b), ErrProtocol)
		return nil
	}
	v := p.b[:n:n]
	p.b = p.b[n:]
	return v
}

func (p *parser) u8(field string) uint8 {
	if v := p.take(1, field); v != nil {
		return v[0]
	}
	return 0
}

func (p *parser) u32(field string) uint32 {
	if v := p.take(4, field); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (p *parser) u64(field string) uint64 {
	if v := p.take(8, field); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// field reads a u16 length and that many bytes, rejecting a length above limit.
func (p *parser) field(field string, limit int) []byte {
	v := p.take(2, field+" length")
	if v == nil {
		return nil
	}
	n := int(binary.BigEndian.Uint16(v))
	if n > limit {
		p.err = fmt.Errorf("frame: %s %s is %d bytes, the limit is %d: %w", p.what, field, n, limit, ErrProtocol)
		return nil
	}
	return p.take(n, field)
}

func (p *parser) done() error {
	if p.err == nil && len(p.b) > 0 {
		p.err = fmt.Errorf("frame: %s body has %d trailing bytes: %w", p.what, len(p.b), ErrProtocol)
	}
	return p.err
}

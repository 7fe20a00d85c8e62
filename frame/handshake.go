package frame

import (
	"encoding/binary"
	"fmt"
)

// Bounds on the variable-length fields of the handshake bodies.
const (
	MaxName     = 255 // bytes in Hello.Name and Welcome.Name
	MaxToken    = 256 // bytes in Hello.Token
	MaxIdentity = 255 // bytes in Hello.Identity and Welcome.Identity
)

// Extensions follow the fixed fields of a hello or a welcome: each a u16 tag, a u16
// length and that many bytes. A receiver skips tags it does not know, so that a later
// version can add fields its predecessors ignore; a known tag appears at most once. An
// extension with an empty value is not sent, so that a body without one is the body of
// earlier versions byte for byte.
const (
	extIdentity uint16 = 1 // the service identity (Config.Identity)
	extRole     uint16 = 2 // hello only: the peer's role, RoleObserver or absent (a member)
)

// RoleObserver is the Hello.Role of a peer that only observes (a status tool): the Leader
// serves it status and watch requests only and does not count it as a Follower.
const RoleObserver = "observer"

// Hello is the body of the KindHello frame, the first frame a follower sends. Encoded
// big-endian: MinVersion u8, MaxVersion u8, PID u32, MaxBody u32, then Name and Token,
// each as a u16 length followed by that many bytes.
type Hello struct {
	MinVersion, MaxVersion uint8  // the protocol versions the sender speaks: 1 ≤ Min ≤ Max
	PID                    uint32 // sender's pid; advisory only, pids collide across pid namespaces
	MaxBody                uint32 // largest frame body the sender accepts
	Name                   string // the cluster Name the follower joined; the leader rejects a mismatch
	Token                  []byte // auth token for the TCP transport; empty on Unix sockets
	Identity               string // the service identity (extension 1); the leader rejects a mismatch
	Role                   string // "" for a member, RoleObserver for an observer (extension 2)
}

// Append appends the encoded hello to dst and returns the extended slice. It panics if
// Name is longer than MaxName, Token longer than MaxToken or Identity longer than
// MaxIdentity: callers validate those.
func (h *Hello) Append(dst []byte) []byte {
	mustFit("Hello.Name", len(h.Name), MaxName)
	mustFit("Hello.Token", len(h.Token), MaxToken)
	mustFit("Hello.Identity", len(h.Identity), MaxIdentity)
	mustFit("Hello.Role", len(h.Role), MaxIdentity)
	dst = append(dst, h.MinVersion, h.MaxVersion)
	dst = binary.BigEndian.AppendUint32(dst, h.PID)
	dst = binary.BigEndian.AppendUint32(dst, h.MaxBody)
	dst = appendField(dst, h.Name)
	dst = appendField(dst, h.Token)
	dst = appendExtension(dst, extIdentity, h.Identity)
	return appendExtension(dst, extRole, h.Role)
}

// ParseHello decodes a hello body. A truncated body or extension, an overlong Name,
// Token or Identity, a repeated extension, a MinVersion of 0 or a MinVersion above
// MaxVersion is an error matching ErrProtocol; versions that merely differ from Version
// are not an error here, and unknown extensions are skipped. Token does not alias b.
// ParseHello never panics.
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
	ext := p.extensions()
	h.Identity, h.Role = string(ext[extIdentity]), string(ext[extRole])
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
	Version  uint8  // the protocol version chosen for the connection; never 0
	PID      uint32 // leader's pid; advisory only
	MaxBody  uint32 // largest frame body the leader accepts
	Term     uint64 // leadership term number
	Name     string // the cluster Name the leader serves
	Identity string // the service identity the leader serves (extension 1)
}

// Append appends the encoded welcome to dst and returns the extended slice. It panics if
// Name is longer than MaxName or Identity longer than MaxIdentity: callers validate
// them.
func (w *Welcome) Append(dst []byte) []byte {
	mustFit("Welcome.Name", len(w.Name), MaxName)
	mustFit("Welcome.Identity", len(w.Identity), MaxIdentity)
	dst = append(dst, w.Version)
	dst = binary.BigEndian.AppendUint32(dst, w.PID)
	dst = binary.BigEndian.AppendUint32(dst, w.MaxBody)
	dst = binary.BigEndian.AppendUint64(dst, w.Term)
	dst = appendField(dst, w.Name)
	return appendExtension(dst, extIdentity, w.Identity)
}

// ParseWelcome decodes a welcome body. A truncated body or extension, an overlong Name
// or Identity, a repeated extension or a Version of 0 is an error matching ErrProtocol;
// unknown extensions are skipped. ParseWelcome never panics.
func ParseWelcome(b []byte) (Welcome, error) {
	p := parser{b: b, what: "welcome"}
	w := Welcome{
		Version: p.u8("version"),
		PID:     p.u32("pid"),
		MaxBody: p.u32("max body"),
		Term:    p.u64("term"),
		Name:    string(p.field("name", MaxName)),
	}
	w.Identity = string(p.extensions()[extIdentity])
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

// appendExtension appends extension tag with value v, unless v is empty.
func appendExtension(dst []byte, tag uint16, v string) []byte {
	if v == "" {
		return dst
	}
	dst = binary.BigEndian.AppendUint16(dst, tag)
	return appendField(dst, v)
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

// extensions reads the extensions that end a body: the value of each known tag (absent
// ones are nil), after checking its bound. Unknown tags are skipped.
func (p *parser) extensions() map[uint16][]byte {
	var known map[uint16][]byte
	for p.err == nil && len(p.b) > 0 {
		tag := p.u16("extension tag")
		limit := 1<<16 - 1
		name := fmt.Sprintf("extension %d", tag)
		switch tag {
		case extIdentity:
			limit, name = MaxIdentity, "identity"
		case extRole:
			limit, name = MaxIdentity, "role"
		}
		v := p.field(name, limit)
		if p.err != nil || (tag != extIdentity && tag != extRole) {
			continue
		}
		if _, dup := known[tag]; dup {
			p.err = fmt.Errorf("frame: %s body repeats its %s: %w", p.what, name, ErrProtocol)
			return nil
		}
		if known == nil {
			known = make(map[uint16][]byte, 2)
		}
		known[tag] = v
	}
	return known
}

func (p *parser) u16(field string) uint16 {
	if v := p.take(2, field); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (p *parser) done() error {
	if p.err == nil && len(p.b) > 0 {
		p.err = fmt.Errorf("frame: %s body has %d trailing bytes: %w", p.what, len(p.b), ErrProtocol)
	}
	return p.err
}

// Package upstream is a small real server and the cluster.Service that talks to it. It
// stands in for "the server" (a registry, a Redis) in tests and in the demo program: it
// makes visible how many connections the server sees and how many of them subscribe to
// each topic, and it pushes numbered messages to subscribers.
//
// The protocol is length-prefixed JSON over TCP: each packet is a 4-byte big-endian
// length followed by a JSON object (byte payloads travel as base64). Client to server:
// invoke {id, method, data}, subscribe {id, topic}, unsubscribe {topic},
// publish {id, topic, data}, withdraw {id, topic, data}. Server to client: response {id, data, err} to every packet
// that carries an id, and message {topic, data} to subscribers. Each side reads a
// connection on one goroutine and serialises its writes, so per connection, packets
// keep their order.
//
// Publish is also a registration, as in a service registry with ephemeral entries: the
// server remembers each published payload for the publishing connection until that
// connection withdraws it (one equal entry per withdraw) or closes (Server.Registered).
//
// Server invoke methods:
//
//   - "echo" returns data unchanged.
//   - "conns" returns Server.Conns as decimal ASCII.
//   - "incr" increments a server-wide counter and returns its new value as decimal ASCII.
//   - "sleep" parses data as a Go duration ("50ms"), sleeps that long (or until the
//     connection closes) and returns "ok".
//   - "fail" returns the error "failed on purpose: " + data.
//   - any other method returns the error "unknown method <name>".
package upstream

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// maxPacket bounds one packet's JSON body, on both sides.
const maxPacket = 64 << 20

// Packet operations.
const (
	opInvoke      = "invoke"
	opSubscribe   = "subscribe"
	opUnsubscribe = "unsubscribe"
	opPublish     = "publish"
	opWithdraw    = "withdraw"
	opResponse    = "response"
	opMessage     = "message"
)

// packet is every packet of the protocol; Op says which fields matter.
type packet struct {
	Op     string `json:"op"`
	ID     uint64 `json:"id,omitempty"`
	Method string `json:"method,omitempty"`
	Topic  string `json:"topic,omitempty"`
	Data   []byte `json:"data,omitempty"`
	Err    string `json:"err,omitempty"`
}

// encode returns p framed for the wire: its length, then its JSON.
func encode(p packet) ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if len(b) > maxPacket {
		return nil, fmt.Errorf("upstream: packet of %d bytes exceeds %d", len(b), maxPacket)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	return buf, nil
}

// decode reads one framed packet from r.
func decode(r io.Reader) (packet, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return packet{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxPacket {
		return packet{}, fmt.Errorf("upstream: packet of %d bytes exceeds %d", n, maxPacket)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return packet{}, err
	}
	var p packet
	if err := json.Unmarshal(b, &p); err != nil {
		return packet{}, fmt.Errorf("upstream: bad packet: %w", err)
	}
	return p, nil
}

package netctl

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// The datagram format of network control, version 1 (docs/protocol.md):
//
//	off  len  field
//	  0    4  magic "MTDC"
//	  4    1  version (1)
//	  5    1  kind (Kind)
//	  6    1  flags (Flags)
//	  7    1  reserved, 0
//	  8   16  request id
//	 24   16  nonce
//	 40    8  time: Unix nanoseconds, big-endian
//	 48    2  part: index of this part, from 0
//	 50    2  parts: number of parts of the message
//	 52    n  body
//	 -32  32  HMAC-SHA256 under the shared key of every byte before it
const (
	wireVersion = 1
	headerSize  = 52
	macSize     = sha256.Size
	overhead    = headerSize + macSize

	// MaxDatagram is the largest datagram metad sends or accepts. It fits
	// the 1500-byte Ethernet MTU with room for IPv6 and a tunnel header,
	// so no datagram depends on IP fragmentation.
	MaxDatagram = 1400

	// partBody is the most reply bytes one part carries. A reply part
	// wrapped in a relay's forward datagram must still fit MaxDatagram.
	partBody = MaxDatagram - overhead - forwardOriginSize - overhead

	// maxParts bounds a message: 4096 parts of partBody bytes is over
	// 4 MiB, more than a list of thousands of services needs.
	maxParts = 4096

	// forwardOriginSize is the origin address at the start of a forward
	// body: 16 bytes, IPv4 in its IPv6-mapped form.
	forwardOriginSize = 16
)

var magic = [4]byte{'M', 'T', 'D', 'C'}

// Kind says what a datagram is.
type Kind uint8

// The kinds of datagram.
const (
	KindRequest  Kind = iota + 1 // metac (or a relay) to metad: a Request as JSON
	KindReply                    // metad to the requester: one part of a Reply as JSON
	KindForward                  // relay to metac: origin address + an origin's reply datagram
	KindRelayEnd                 // relay to metac: the relay is done; a relayEnd as JSON
	KindResend                   // requester to metad: send these parts of your reply again
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindReply:
		return "reply"
	case KindForward:
		return "forward"
	case KindRelayEnd:
		return "relay-end"
	case KindResend:
		return "resend"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

// Flags qualify a request.
type Flags uint8

// The flags of a request. A request carries at most one of them; replies
// carry none.
const (
	// FlagRelay asks the receiver to broadcast the request on its own
	// subnets and return the replies.
	FlagRelay Flags = 1 << iota
	// FlagRelayed marks a relay's copy of a request, which is never
	// relayed again.
	FlagRelayed
)

// ID identifies a request, and the replies to it, across every copy of it.
type ID [16]byte

// Nonce makes each datagram unique, for replay detection.
type Nonce [16]byte

// Datagram is one decoded network control datagram.
type Datagram struct {
	Kind  Kind
	Flags Flags
	ID    ID
	Nonce Nonce
	Time  time.Time // when the sender made it; the decoder keeps nanoseconds
	Part  uint16    // index of this part, from 0
	Parts uint16    // number of parts, at least 1
	Body  []byte
}

// Errors of Decode. Callers log them as the reason a datagram was refused.
var (
	ErrMalformed = errors.New("malformed datagram")
	ErrVersion   = errors.New("unsupported protocol version")
	ErrMAC       = errors.New("bad MAC")
)

// Encode returns d as a datagram authenticated under key. It uses d's
// Nonce and Time as they are; newDatagram fills them in.
func Encode(key []byte, d *Datagram) ([]byte, error) {
	if len(d.Body) > MaxDatagram-overhead {
		return nil, fmt.Errorf("cannot encode %s: body of %d bytes is over %d", d.Kind, len(d.Body), MaxDatagram-overhead)
	}
	b := make([]byte, headerSize, headerSize+len(d.Body)+macSize)
	copy(b[0:4], magic[:])
	b[4] = wireVersion
	b[5] = byte(d.Kind)
	b[6] = byte(d.Flags)
	copy(b[8:24], d.ID[:])
	copy(b[24:40], d.Nonce[:])
	binary.BigEndian.PutUint64(b[40:48], uint64(d.Time.UnixNano()))
	binary.BigEndian.PutUint16(b[48:50], d.Part)
	binary.BigEndian.PutUint16(b[50:52], d.Parts)
	b = append(b, d.Body...)
	return append(b, mac(key, b)...), nil
}

// Decode checks b's length, magic, version and MAC under key, then its
// fields, and returns the datagram. Body aliases b. It does not judge
// freshness: the time and nonce are the receiver's to check.
func Decode(key []byte, b []byte) (*Datagram, error) {
	if len(b) < overhead || len(b) > MaxDatagram || [4]byte(b[0:4]) != magic {
		return nil, ErrMalformed
	}
	if b[4] != wireVersion {
		return nil, fmt.Errorf("%w %d", ErrVersion, b[4])
	}
	n := len(b) - macSize
	if !hmac.Equal(mac(key, b[:n]), b[n:]) {
		return nil, ErrMAC
	}
	d := &Datagram{
		Kind:  Kind(b[5]),
		Flags: Flags(b[6]),
		ID:    ID(b[8:24]),
		Nonce: Nonce(b[24:40]),
		Time:  time.Unix(0, int64(binary.BigEndian.Uint64(b[40:48]))),
		Part:  binary.BigEndian.Uint16(b[48:50]),
		Parts: binary.BigEndian.Uint16(b[50:52]),
		Body:  b[headerSize:n],
	}
	if err := d.check(b[7]); err != nil {
		return nil, err
	}
	return d, nil
}

// check validates the fields Decode cannot check one by one.
func (d *Datagram) check(reserved byte) error {
	if reserved != 0 || d.Parts == 0 || d.Parts > maxParts || d.Part >= d.Parts {
		return ErrMalformed
	}
	switch d.Kind {
	case KindRequest:
		if d.Parts != 1 || d.Flags == FlagRelay|FlagRelayed || d.Flags&^(FlagRelay|FlagRelayed) != 0 {
			return ErrMalformed
		}
	case KindReply, KindRelayEnd:
		if d.Flags != 0 || d.Kind == KindRelayEnd && d.Parts != 1 {
			return ErrMalformed
		}
	case KindForward:
		if d.Flags != 0 || d.Parts != 1 || len(d.Body) < forwardOriginSize+overhead {
			return ErrMalformed
		}
	case KindResend:
		if d.Flags != 0 || d.Parts != 1 {
			return ErrMalformed
		}
		if _, _, err := decodeResend(d.Body); err != nil {
			return err
		}
	default:
		return ErrMalformed
	}
	return nil
}

// mac is HMAC-SHA256 of b under key.
func mac(key, b []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(b)
	return h.Sum(nil)
}

// newDatagram returns a datagram of kind for request id, with a fresh
// random nonce and time now, as one part.
func newDatagram(kind Kind, id ID, now time.Time) *Datagram {
	d := &Datagram{Kind: kind, ID: id, Time: now, Parts: 1}
	rand.Read(d.Nonce[:]) // crypto/rand.Read never returns an error
	return d
}

// newID returns a random request id.
func newID() ID {
	var id ID
	rand.Read(id[:])
	return id
}

// splitBody cuts body into the bodies of as many parts as it needs.
func splitBody(kind Kind, body []byte) ([][]byte, error) {
	parts := max(1, (len(body)+partBody-1)/partBody)
	if parts > maxParts {
		return nil, fmt.Errorf("cannot send a %s of %d bytes: over %d parts", kind, len(body), maxParts)
	}
	out := make([][]byte, parts)
	for i := range parts {
		out[i] = body[i*partBody : min((i+1)*partBody, len(body))]
	}
	return out, nil
}

// encodePart encodes part i of n, whose body is body, as a datagram of
// kind for id made at now.
func encodePart(key []byte, kind Kind, id ID, now time.Time, i, n int, body []byte) ([]byte, error) {
	d := newDatagram(kind, id, now)
	d.Part, d.Parts, d.Body = uint16(i), uint16(n), body
	return Encode(key, d)
}

// encodeParts encodes body as a message of as many parts as it needs, each
// a datagram of kind for id made at now.
func encodeParts(key []byte, kind Kind, id ID, now time.Time, body []byte) ([][]byte, error) {
	bodies, err := splitBody(kind, body)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(bodies))
	for i, b := range bodies {
		d, err := encodePart(key, kind, id, now, i, len(bodies), b)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// encodeForward wraps inner, a datagram received from origin, for the
// requester of a relayed request.
func encodeForward(key []byte, id ID, now time.Time, origin netip.Addr, inner []byte) ([]byte, error) {
	d := newDatagram(KindForward, id, now)
	o := origin.As16()
	d.Body = append(o[:], inner...)
	return Encode(key, d)
}

// forwarded splits the body of a forward datagram into the origin's
// address and the origin's datagram.
func (d *Datagram) forwarded() (netip.Addr, []byte) {
	return netip.AddrFrom16([16]byte(d.Body[:forwardOriginSize])).Unmap(), d.Body[forwardOriginSize:]
}

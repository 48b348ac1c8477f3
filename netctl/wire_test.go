package netctl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"
)

var (
	testKey   = []byte("0123456789abcdef-test-key")
	otherKey  = []byte("0123456789abcdef-other-key")
	testTime  = time.Date(2026, 1, 2, 3, 4, 5, 6789, time.UTC)
	testID    = ID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	testNonce = Nonce{16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}
)

func testDatagram(kind Kind, flags Flags, body string) *Datagram {
	return &Datagram{Kind: kind, Flags: flags, ID: testID, Nonce: testNonce, Time: testTime, Parts: 1, Body: []byte(body)}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	fwd := append(make([]byte, forwardOriginSize), make([]byte, overhead)...)
	tests := []struct {
		name string
		d    *Datagram
	}{
		{"request", testDatagram(KindRequest, 0, `{"v":1,"cmd":"list"}`)},
		{"relay request", testDatagram(KindRequest, FlagRelay, `{"v":1,"cmd":"list"}`)},
		{"relayed request", testDatagram(KindRequest, FlagRelayed, `{}`)},
		{"empty reply", testDatagram(KindReply, 0, "")},
		{"last part of a reply", &Datagram{Kind: KindReply, ID: testID, Nonce: testNonce, Time: testTime, Part: 9, Parts: 10, Body: []byte("x")}},
		{"forward", testDatagram(KindForward, 0, string(fwd))},
		{"relay end", testDatagram(KindRelayEnd, 0, `{"hosts":2,"forwarded":3}`)},
		{"largest body", testDatagram(KindReply, 0, string(make([]byte, MaxDatagram-overhead)))},
	}
	for _, tt := range tests {
		b, err := Encode(testKey, tt.d)
		if err != nil {
			t.Fatalf("%s: Encode: %v", tt.name, err)
		}
		if len(b) != overhead+len(tt.d.Body) {
			t.Errorf("%s: got %d bytes, want %d", tt.name, len(b), overhead+len(tt.d.Body))
		}
		got, err := Decode(testKey, b)
		if err != nil {
			t.Fatalf("%s: Decode: %v", tt.name, err)
		}
		if got.Kind != tt.d.Kind || got.Flags != tt.d.Flags || got.ID != tt.d.ID || got.Nonce != tt.d.Nonce ||
			!got.Time.Equal(tt.d.Time) || got.Part != tt.d.Part || got.Parts != tt.d.Parts || !bytes.Equal(got.Body, tt.d.Body) {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.d)
		}
	}
}

func TestEncodeRefusesLargeBody(t *testing.T) {
	_, err := Encode(testKey, testDatagram(KindReply, 0, string(make([]byte, MaxDatagram-overhead+1))))
	if err == nil {
		t.Errorf("got no error for a body one byte too large, want one")
	}
}

// resign returns b with its MAC recomputed under key after edit changed it.
func resign(key []byte, b []byte, edit func([]byte)) []byte {
	b = bytes.Clone(b)
	edit(b)
	n := len(b) - macSize
	return append(b[:n], mac(key, b[:n])...)
}

func TestDecodeRefuses(t *testing.T) {
	good, err := Encode(testKey, testDatagram(KindRequest, 0, `{"v":1}`))
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := Encode(testKey, testDatagram(KindReply, 0, "x"))
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"shorter than header and MAC", good[:overhead-1], ErrMalformed},
		{"longer than MaxDatagram", append(bytes.Clone(good), make([]byte, MaxDatagram)...), ErrMalformed},
		{"bad magic", resign(testKey, good, func(b []byte) { b[0] = 'X' }), ErrMalformed},
		{"version 2", resign(testKey, good, func(b []byte) { b[4] = 2 }), ErrVersion},
		{"wrong key", resign(otherKey, good, func([]byte) {}), ErrMAC},
		{"flipped body byte", func() []byte { b := bytes.Clone(good); b[headerSize] ^= 1; return b }(), ErrMAC},
		{"flipped MAC byte", func() []byte { b := bytes.Clone(good); b[len(b)-1] ^= 1; return b }(), ErrMAC},
		{"truncated", good[:len(good)-1], ErrMAC},
		{"reserved byte set", resign(testKey, good, func(b []byte) { b[7] = 1 }), ErrMalformed},
		{"unknown kind", resign(testKey, good, func(b []byte) { b[5] = 9 }), ErrMalformed},
		{"kind zero", resign(testKey, good, func(b []byte) { b[5] = 0 }), ErrMalformed},
		{"relay and relayed", resign(testKey, good, func(b []byte) { b[6] = byte(FlagRelay | FlagRelayed) }), ErrMalformed},
		{"unknown flag", resign(testKey, good, func(b []byte) { b[6] = 4 }), ErrMalformed},
		{"reply with a flag", resign(testKey, reply, func(b []byte) { b[6] = byte(FlagRelay) }), ErrMalformed},
		{"zero parts", resign(testKey, reply, func(b []byte) { binary.BigEndian.PutUint16(b[50:], 0) }), ErrMalformed},
		{"part past the last", resign(testKey, reply, func(b []byte) { binary.BigEndian.PutUint16(b[48:], 1) }), ErrMalformed},
		{"too many parts", resign(testKey, reply, func(b []byte) { binary.BigEndian.PutUint16(b[50:], maxParts+1) }), ErrMalformed},
		{"request in parts", resign(testKey, good, func(b []byte) { binary.BigEndian.PutUint16(b[50:], 2) }), ErrMalformed},
		{"relay end in parts", resign(testKey, reply, func(b []byte) { b[5] = byte(KindRelayEnd); binary.BigEndian.PutUint16(b[50:], 2) }), ErrMalformed},
		{"forward too short to hold a datagram", resign(testKey, reply, func(b []byte) { b[5] = byte(KindForward) }), ErrMalformed},
	}
	for _, tt := range tests {
		d, err := Decode(testKey, tt.b)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, %v; want error %v", tt.name, d, err, tt.want)
		}
	}
}

func TestEncodePartsReassemble(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		parts int
	}{
		{"empty", 0, 1},
		{"one byte", 1, 1},
		{"exactly one part", partBody, 1},
		{"one byte over", partBody + 1, 2},
		{"many", 100*partBody + 7, 101},
	}
	for _, tt := range tests {
		body := make([]byte, tt.size)
		for i := range body {
			body[i] = byte(i)
		}
		dgs, err := encodeParts(testKey, KindReply, testID, testTime, body)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if len(dgs) != tt.parts {
			t.Errorf("%s: got %d parts, want %d", tt.name, len(dgs), tt.parts)
		}
		var got []byte
		for i, b := range dgs {
			if len(b) > MaxDatagram-forwardOriginSize-overhead {
				t.Errorf("%s: part %d has %d bytes, too many to be forwarded by a relay", tt.name, i, len(b))
			}
			d, err := Decode(testKey, b)
			if err != nil || int(d.Part) != i || int(d.Parts) != tt.parts {
				t.Fatalf("%s: part %d: got %+v, %v", tt.name, i, d, err)
			}
			got = append(got, d.Body...)
		}
		if !bytes.Equal(got, body) {
			t.Errorf("%s: reassembled %d bytes that differ from the %d sent", tt.name, len(got), len(body))
		}
	}
	if _, err := encodeParts(testKey, KindReply, testID, testTime, make([]byte, maxParts*partBody+1)); err == nil {
		t.Errorf("got no error for a message over %d parts, want one", maxParts)
	}
}

func TestForwardCarriesOriginAndDatagram(t *testing.T) {
	inner, _ := Encode(testKey, testDatagram(KindReply, 0, `{"ok":true}`))
	for _, origin := range []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::7")} {
		b, err := encodeForward(testKey, testID, testTime, origin, inner)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Decode(testKey, b)
		if err != nil {
			t.Fatal(err)
		}
		gotOrigin, gotInner := d.forwarded()
		if gotOrigin != origin || !bytes.Equal(gotInner, inner) {
			t.Errorf("got %v and %d bytes, want %v and %d", gotOrigin, len(gotInner), origin, len(inner))
		}
	}
}

func TestMACCoversEveryByte(t *testing.T) {
	b, _ := Encode(testKey, testDatagram(KindRequest, FlagRelay, `{"v":1,"cmd":"stop","args":["web"]}`))
	for i := range len(b) {
		c := bytes.Clone(b)
		c[i] ^= 0x80
		if d, err := Decode(testKey, c); err == nil {
			t.Errorf("byte %d changed: got %+v accepted, want refused", i, d)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, d := range []*Datagram{
		testDatagram(KindRequest, 0, `{"v":1,"cmd":"list"}`),
		testDatagram(KindRequest, FlagRelay, `{"v":1,"cmd":"stop","args":["a"],"gather_ms":1000}`),
		testDatagram(KindReply, 0, `{"v":1,"ok":true}`),
		testDatagram(KindRelayEnd, 0, `{"hosts":1,"forwarded":1}`),
		testDatagram(KindResend, 0, string(encodeResend(netip.MustParseAddr("10.0.0.5"), []uint16{0, 3}))),
	} {
		b, _ := Encode(testKey, d)
		f.Add(b)
		f.Add(b[:len(b)-macSize])
	}
	f.Add([]byte("MTDC"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The input as it is (random bytes are refused for their MAC),
		// and the input signed, so that the field checks are reached.
		fuzzOne(t, b)
		if len(b) <= MaxDatagram-macSize {
			fuzzOne(t, append(bytes.Clone(b), mac(testKey, b)...))
		}
	})
}

// fuzzOne decodes b and, when it is accepted, checks that it encodes back
// to the same bytes and that a client survives it.
func fuzzOne(t *testing.T, b []byte) {
	d, err := Decode(testKey, b)
	if err != nil {
		return
	}
	again, err := Encode(testKey, d)
	if err != nil {
		t.Fatalf("cannot encode a decoded datagram: %v", err)
	}
	if !bytes.Equal(again, b) {
		t.Fatalf("round trip changed the datagram:\n got %x\nwant %x", again, b)
	}
	g := newGather(testKey, gatherRelay)
	g.relay = testID
	g.addRelay("relay", netip.MustParseAddr("10.0.0.1"))
	g.addRelay("other", netip.MustParseAddr("10.0.0.2"))
	g.accept(b, netip.MustParseAddrPort("10.0.0.1:611"), d.Time)
	g.results(Target{Relays: []string{"relay", "other"}})
	g.relayProblems()
}

func BenchmarkEncodeDecode(b *testing.B) {
	d := testDatagram(KindReply, 0, string(make([]byte, partBody)))
	b.SetBytes(int64(len(d.Body)))
	for b.Loop() {
		buf, err := Encode(testKey, d)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Decode(testKey, buf); err != nil {
			b.Fatal(err)
		}
	}
}

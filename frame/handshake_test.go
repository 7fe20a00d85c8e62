package frame_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/frame"
)

func TestHelloLayout(t *testing.T) {
	h := frame.Hello{MinVersion: 1, MaxVersion: 2, PID: 0x01020304, MaxBody: 0x05060708, Name: "ab", Token: []byte{0xee}}
	want := []byte{
		1, 2, // 0: min version, 1: max version
		0x01, 0x02, 0x03, 0x04, // 2: pid
		0x05, 0x06, 0x07, 0x08, // 6: max body
		0x00, 0x02, 'a', 'b', // 10: name length, name
		0x00, 0x01, 0xee, // token length, token
	}
	require.Equal(t, append([]byte("x"), want...), h.Append([]byte("x")))
	got, err := frame.ParseHello(want)
	require.NoError(t, err)
	require.Equal(t, h, got)
}

func TestWelcomeLayout(t *testing.T) {
	w := frame.Welcome{Version: 1, PID: 0x01020304, MaxBody: 0x05060708, Term: 0x090a0b0c0d0e0f10, Name: "ab"}
	want := []byte{
		1,                      // 0: version
		0x01, 0x02, 0x03, 0x04, // 1: pid
		0x05, 0x06, 0x07, 0x08, // 5: max body
		0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, // 9: term
		0x00, 0x02, 'a', 'b', // 17: name length, name
	}
	require.Equal(t, append([]byte("x"), want...), w.Append([]byte("x")))
	got, err := frame.ParseWelcome(want)
	require.NoError(t, err)
	require.Equal(t, w, got)
}

var (
	hellos = []frame.Hello{
		{MinVersion: 1, MaxVersion: 1},
		{MinVersion: 1, MaxVersion: 1, PID: 4242, MaxBody: frame.DefaultMaxBody, Name: "jobs"},
		{MinVersion: 1, MaxVersion: 255, PID: 1<<32 - 1, MaxBody: 1<<32 - 1, Name: strings.Repeat("n", frame.MaxName), Token: []byte(strings.Repeat("t", frame.MaxToken))},
		{MinVersion: 3, MaxVersion: 7, Name: "ünïcode", Token: []byte{0, 1, 2}},
		{MinVersion: 1, MaxVersion: 1, Name: "jobs", Identity: "jobs-api/v2"},
		{MinVersion: 1, MaxVersion: 1, Name: "jobs", Token: []byte{9}, Identity: strings.Repeat("i", frame.MaxIdentity)},
	}
	welcomes = []frame.Welcome{
		{Version: 1},
		{Version: 1, PID: 1, MaxBody: frame.DefaultMaxBody, Term: 7, Name: "jobs"},
		{Version: 255, PID: 1<<32 - 1, MaxBody: 1<<32 - 1, Term: 1<<64 - 1, Name: strings.Repeat("n", frame.MaxName)},
		{Version: 1, Term: 3, Name: "jobs", Identity: "jobs-api/v2"},
	}
)

func TestHandshakeRoundTrip(t *testing.T) {
	for _, h := range hellos {
		b := h.Append(nil)
		got, err := frame.ParseHello(b)
		require.NoError(t, err)
		require.Equal(t, h, got)
		if len(b) > 0 && len(got.Token) > 0 {
			b[len(b)-1] ^= 0xff
			require.Equal(t, h.Token, got.Token, "Token aliases the input")
		}
	}
	for _, w := range welcomes {
		got, err := frame.ParseWelcome(w.Append(nil))
		require.NoError(t, err)
		require.Equal(t, w, got)
	}
}

func TestHandshakeTruncatedAndTrailing(t *testing.T) {
	for _, h := range hellos {
		b := h.Append(nil)
		plain := h
		plain.Identity = ""
		fixed := len(plain.Append(nil)) // where the extensions start
		for n := range len(b) {
			got, err := frame.ParseHello(b[:n])
			if n == fixed { // cut before the extensions: a hello without them
				require.NoError(t, err)
				require.Equal(t, plain, got)
				continue
			}
			require.ErrorIs(t, err, frame.ErrProtocol, "hello truncated to %d of %d bytes", n, len(b))
			require.Contains(t, err.Error(), "hello body truncated")
		}
		_, err := frame.ParseHello(append(b, 0))
		require.ErrorIs(t, err, frame.ErrProtocol)
		require.Contains(t, err.Error(), "hello body truncated: extension tag needs 2 bytes, 1 left")
	}
	for _, w := range welcomes {
		b := w.Append(nil)
		plain := w
		plain.Identity = ""
		fixed := len(plain.Append(nil))
		for n := range len(b) {
			got, err := frame.ParseWelcome(b[:n])
			if n == fixed {
				require.NoError(t, err)
				require.Equal(t, plain, got)
				continue
			}
			require.ErrorIs(t, err, frame.ErrProtocol, "welcome truncated to %d of %d bytes", n, len(b))
			require.Contains(t, err.Error(), "welcome body truncated")
		}
		_, err := frame.ParseWelcome(append(b, 0, 9, 0))
		require.ErrorIs(t, err, frame.ErrProtocol)
		require.Contains(t, err.Error(), "welcome body truncated: extension 9 length needs 2 bytes, 1 left")
	}
}

// Extensions: unknown ones are skipped (a later version may add some), a known one
// appears once and within its bound, and a body without any is the earlier layout.
func TestHandshakeExtensions(t *testing.T) {
	base := (&frame.Hello{MinVersion: 1, MaxVersion: 1, Name: "jobs"}).Append(nil)
	ext := func(tag uint16, v string) []byte {
		return append([]byte{byte(tag >> 8), byte(tag), byte(len(v) >> 8), byte(len(v))}, v...)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	h, err := frame.ParseHello(cat(base, ext(77, "from the future"), ext(1, "api/v2"), ext(0xffff, "")))
	require.NoError(t, err)
	require.Equal(t, "api/v2", h.Identity)

	_, err = frame.ParseHello(cat(base, ext(1, "a"), ext(1, "b")))
	require.ErrorIs(t, err, frame.ErrProtocol)
	require.ErrorContains(t, err, "hello body repeats its identity")

	_, err = frame.ParseHello(cat(base, ext(1, strings.Repeat("i", frame.MaxIdentity+1))))
	require.ErrorIs(t, err, frame.ErrProtocol)
	require.ErrorContains(t, err, "hello identity is 256 bytes, the limit is 255")

	// The identity extension, byte by byte.
	require.Equal(t, cat(base, []byte{0, 1, 0, 2, 'v', '2'}), (&frame.Hello{MinVersion: 1, MaxVersion: 1, Name: "jobs", Identity: "v2"}).Append(nil))
	require.Panics(t, func() {
		(&frame.Welcome{Version: 1, Identity: strings.Repeat("i", frame.MaxIdentity+1)}).Append(nil)
	})
}

func TestHandshakeRejects(t *testing.T) {
	field := func(n int) []byte { return []byte{byte(n >> 8), byte(n)} }
	helloWith := func(min, max uint8, name, token []byte) []byte {
		b := []byte{min, max, 0, 0, 0, 1, 0, 0, 1, 0}
		return append(append(b, name...), token...)
	}
	longName := append(field(frame.MaxName+1), strings.Repeat("n", frame.MaxName+1)...)
	longToken := append(field(frame.MaxToken+1), strings.Repeat("t", frame.MaxToken+1)...)
	huge := field(0xffff) // a length far beyond the body: must fail on the bound, not index out of range
	empty := field(0)

	for name, c := range map[string]struct {
		b   []byte
		msg string
	}{
		"name 256 bytes":  {helloWith(1, 1, longName, empty), "hello name is 256 bytes, the limit is 255"},
		"name 65535":      {helloWith(1, 1, huge, empty), "hello name is 65535 bytes"},
		"token 257 bytes": {helloWith(1, 1, empty, longToken), "hello token is 257 bytes, the limit is 256"},
		"token 65535":     {helloWith(1, 1, empty, huge), "hello token is 65535 bytes"},
		"min version 0":   {helloWith(0, 1, empty, empty), "version range 0..1"},
		"min above max":   {helloWith(2, 1, empty, empty), "version range 2..1"},
		"empty":           {nil, "hello body truncated"},
	} {
		_, err := frame.ParseHello(c.b)
		require.ErrorIs(t, err, frame.ErrProtocol, name)
		require.Contains(t, err.Error(), c.msg, name)
	}

	welcomeWith := func(version uint8, name []byte) []byte {
		b := append([]byte{version}, make([]byte, 16)...)
		return append(b, name...)
	}
	for name, c := range map[string]struct {
		b   []byte
		msg string
	}{
		"name 256 bytes": {welcomeWith(1, longName), "welcome name is 256 bytes, the limit is 255"},
		"name 65535":     {welcomeWith(1, huge), "welcome name is 65535 bytes"},
		"version 0":      {welcomeWith(0, empty), "version 0"},
		"empty":          {nil, "welcome body truncated"},
	} {
		_, err := frame.ParseWelcome(c.b)
		require.ErrorIs(t, err, frame.ErrProtocol, name)
		require.Contains(t, err.Error(), c.msg, name)
	}
}

func TestHandshakeAppendPanicsOnOverlongFields(t *testing.T) {
	long := strings.Repeat("n", frame.MaxName+1)
	require.PanicsWithValue(t, "frame: Hello.Name is 256 bytes, the limit is 255", func() {
		(&frame.Hello{MinVersion: 1, MaxVersion: 1, Name: long}).Append(nil)
	})
	require.Panics(t, func() {
		(&frame.Hello{MinVersion: 1, MaxVersion: 1, Token: make([]byte, frame.MaxToken+1)}).Append(nil)
	})
	require.Panics(t, func() { (&frame.Welcome{Version: 1, Name: long}).Append(nil) })
}

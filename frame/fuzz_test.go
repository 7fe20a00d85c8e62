package frame_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/frame"
)

// fuzzLimits keeps the fuzzer from spending its time allocating 16 MiB bodies.
var fuzzLimits = frame.Limits{MaxMeta: 1 << 10, MaxBody: 1 << 16}

func FuzzDecode(f *testing.F) {
	seeds := []struct {
		h          frame.Header
		meta, body []byte
	}{
		{frame.Header{Kind: frame.KindPing, ID: 1}, nil, nil},
		{frame.Header{Kind: frame.KindInvoke, ID: 2, Timeout: 1000}, []byte("svc.Method"), []byte(`{"a":1}`)},
		{frame.Header{Kind: frame.KindError, ID: 2}, []byte(frame.CodeTimeout), []byte("deadline passed")},
		{frame.Header{Kind: frame.KindMessage}, []byte("topic"), bytes.Repeat([]byte{0xab}, 300)},
		{frame.Header{Kind: frame.KindOneway, FDs: 2, ID: 1<<64 - 1}, []byte("m"), nil},
	}
	var stream []byte
	for _, s := range seeds {
		b := frame.AppendFrame(nil, s.h, s.meta, s.body)
		f.Add(b)
		stream = append(stream, b...)
	}
	f.Add(stream) // several frames back to back
	ping := frame.AppendFrame(nil, frame.Header{Kind: frame.KindPing}, nil, nil)
	f.Add(ping[:10])                                                                      // truncated header
	f.Add(append([]byte{2}, ping[1:]...))                                                 // wrong version
	f.Add(append([]byte{1, 99}, ping[2:]...))                                             // unknown kind
	f.Add(frame.AppendFrame(nil, frame.Header{Kind: frame.KindPing, Flags: 1}, nil, nil)) // flag set
	f.Add(frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke}, []byte("m"), []byte("b"))[:frame.HeaderSize+1])

	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			start := len(data) - r.Len()
			fr, err := frame.Read(r, fuzzLimits)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
					!errors.Is(err, frame.ErrProtocol) && !errors.Is(err, frame.ErrTooLarge) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			consumed := data[start : len(data)-r.Len()]
			require.Equal(t, fr.Size(), len(consumed))
			require.Equal(t, consumed, frame.AppendFrame(nil, fr.Header, fr.Meta, fr.Body))
		}
	})
}

func FuzzHandshake(f *testing.F) {
	for _, h := range hellos {
		f.Add(h.Append(nil))
	}
	for _, w := range welcomes {
		f.Add(w.Append(nil))
	}
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff})

	// A parsed body re-encodes to what parses the same. Byte for byte only without
	// extensions the parser skips (unknown ones, an empty identity): those are dropped.
	f.Fuzz(func(t *testing.T, data []byte) {
		if h, err := frame.ParseHello(data); err == nil {
			again, err := frame.ParseHello(h.Append(nil))
			require.NoError(t, err)
			require.Equal(t, h, again, "hello does not parse the same once re-encoded")
			if len(h.Append(nil)) == len(data) {
				require.Equal(t, data, h.Append(nil), "hello does not re-encode to its input")
			}
		} else {
			require.ErrorIs(t, err, frame.ErrProtocol)
		}
		if w, err := frame.ParseWelcome(data); err == nil {
			again, err := frame.ParseWelcome(w.Append(nil))
			require.NoError(t, err)
			require.Equal(t, w, again, "welcome does not parse the same once re-encoded")
			if len(w.Append(nil)) == len(data) {
				require.Equal(t, data, w.Append(nil), "welcome does not re-encode to its input")
			}
		} else {
			require.ErrorIs(t, err, frame.ErrProtocol)
		}
	})
}

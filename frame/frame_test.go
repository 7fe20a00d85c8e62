package frame_test

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/frame"
)

// TestConstants pins every wire constant: changing one breaks every deployed peer.
func TestConstants(t *testing.T) {
	require.Equal(t, uint8(1), frame.Version)
	require.Equal(t, 24, frame.HeaderSize)
	require.Equal(t, 65536, frame.DefaultMaxMeta)
	require.Equal(t, 16777216, frame.DefaultMaxBody)
	require.Equal(t, 16, frame.MaxFDs)
	require.Equal(t, 255, frame.MaxName)
	require.Equal(t, 256, frame.MaxToken)

	kinds := []struct {
		k    frame.Kind
		v    uint8
		name string
	}{
		{frame.KindHello, 1, "hello"},
		{frame.KindWelcome, 2, "welcome"},
		{frame.KindInvoke, 3, "invoke"},
		{frame.KindOneway, 4, "oneway"},
		{frame.KindResponse, 5, "response"},
		{frame.KindError, 6, "error"},
		{frame.KindSubscribe, 7, "subscribe"},
		{frame.KindUnsubscribe, 8, "unsubscribe"},
		{frame.KindMessage, 9, "message"},
		{frame.KindPublish, 10, "publish"},
		{frame.KindPing, 11, "ping"},
		{frame.KindPong, 12, "pong"},
		{frame.KindGoodbye, 13, "goodbye"},
		{frame.KindRegister, 14, "register"},
		{frame.KindWithdraw, 15, "withdraw"},
	}
	for _, c := range kinds {
		require.Equal(t, c.v, uint8(c.k), c.name)
		require.Equal(t, c.name, c.k.String())
		require.True(t, c.k.Valid(), c.name)
	}
	for _, k := range []frame.Kind{0, 16, 99, 255} {
		require.False(t, k.Valid(), k)
	}
	require.Equal(t, "kind(0)", frame.Kind(0).String())
	require.Equal(t, "kind(99)", frame.Kind(99).String())

	codes := map[string]string{
		frame.CodeRemote:       "remote",
		frame.CodeTimeout:      "timeout",
		frame.CodeTooLarge:     "too-large",
		frame.CodeProtocol:     "protocol",
		frame.CodeUnauthorized: "unauthorized",
		frame.CodeVersion:      "version",
		frame.CodeClosed:       "closed",
		frame.CodeNotFound:     "not-found",
		frame.CodeBusy:         "busy",
		frame.CodeLimit:        "limit",
	}
	for got, want := range codes {
		require.Equal(t, want, got)
	}
	require.Len(t, codes, 10, "codes must be distinct")
}

// TestHeaderLayout pins the byte offset of every header field.
func TestHeaderLayout(t *testing.T) {
	h := frame.Header{
		Version: 1,
		Kind:    frame.KindPublish,
		Flags:   0xa5,
		FDs:     3,
		ID:      0x0102030405060708,
		Timeout: 0x090a0b0c,
		MetaLen: 0x0d0e0f10,
		BodyLen: 0x11121314,
	}
	want := []byte{
		0x01,                                           // 0: version
		0x0a,                                           // 1: kind
		0xa5,                                           // 2: flags
		0x03,                                           // 3: fds
		0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // 4: id
		0x09, 0x0a, 0x0b, 0x0c, // 12: timeout ms
		0x0d, 0x0e, 0x0f, 0x10, // 16: meta length
		0x11, 0x12, 0x13, 0x14, // 20: body length
	}
	require.Len(t, want, frame.HeaderSize)

	b := bytes.Repeat([]byte{0xff}, frame.HeaderSize+2)
	h.Put(b)
	require.Equal(t, want, b[:frame.HeaderSize])
	require.Equal(t, []byte{0xff, 0xff}, b[frame.HeaderSize:], "Put wrote past the header")

	require.Equal(t, append([]byte("x"), want...), h.Append([]byte("x")))
	require.Equal(t, frame.HeaderSize+0x0d0e0f10+0x11121314, h.Size())
	require.Panics(t, func() { h.Put(make([]byte, frame.HeaderSize-1)) })

	// Decoding gives the same fields back (with flags cleared: ParseHeader rejects them).
	h.Flags = 0
	h.Put(b)
	got, err := frame.ParseHeader(b, frame.Limits{MaxMeta: 0xffffffff, MaxBody: 0xffffffff})
	require.NoError(t, err)
	require.Equal(t, h, got)
}

func TestRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	cases := []struct {
		h          frame.Header
		meta, body []byte
	}{
		{frame.Header{Kind: frame.KindPing, ID: 0}, nil, nil},
		{frame.Header{Kind: frame.KindPong, ID: 1<<64 - 1}, nil, nil},
		{frame.Header{Kind: frame.KindInvoke, ID: 42, Timeout: 1500}, []byte("math.Add"), []byte(`[1,2]`)},
		{frame.Header{Kind: frame.KindOneway, ID: 43, FDs: frame.MaxFDs}, []byte("log"), nil},
		{frame.Header{Kind: frame.KindResponse, ID: 42}, nil, []byte("3")},
		{frame.Header{Kind: frame.KindError, ID: 42}, []byte(frame.CodeRemote), []byte("division by zero")},
		{frame.Header{Kind: frame.KindSubscribe, ID: 7}, []byte("prices"), nil},
		{frame.Header{Kind: frame.KindMessage}, []byte("prices/ünïcode"), big},
		{frame.Header{Kind: frame.KindPublish, ID: 9, Timeout: 0xffffffff}, []byte("prices"), []byte{0}},
		{frame.Header{Kind: frame.KindGoodbye}, nil, nil},
	}
	var stream []byte
	for _, c := range cases {
		stream = frame.AppendFrame(stream, c.h, c.meta, c.body)
	}
	var written bytes.Buffer
	for _, c := range cases {
		require.NoError(t, frame.Write(&written, c.h, c.meta, c.body))
	}
	require.Equal(t, stream, written.Bytes(), "Write and AppendFrame disagree")

	for name, r := range map[string]io.Reader{
		"bytes":   bytes.NewReader(stream),
		"onebyte": iotest.OneByteReader(bytes.NewReader(stream)),
		"dataeof": iotest.DataErrReader(bytes.NewReader(stream)),
	} {
		t.Run(name, func(t *testing.T) {
			for _, c := range cases {
				f, err := frame.Read(r, frame.Limits{})
				require.NoError(t, err)
				want := c.h
				want.Version, want.MetaLen, want.BodyLen = frame.Version, uint32(len(c.meta)), uint32(len(c.body))
				require.Equal(t, want, f.Header)
				require.Equal(t, c.meta, f.Meta)
				require.Equal(t, c.body, f.Body)
				require.Equal(t, frame.HeaderSize+len(c.meta)+len(c.body), f.Size())
			}
			_, err := frame.Read(r, frame.Limits{})
			require.Same(t, io.EOF, err, "a clean end between frames is io.EOF itself")
		})
	}
}

func TestAppendFrameOverridesVersionAndLengths(t *testing.T) {
	b := frame.AppendFrame(nil, frame.Header{Version: 9, Kind: frame.KindInvoke, ID: 1, MetaLen: 99, BodyLen: 99}, []byte("m"), []byte("bb"))
	f, err := frame.Read(bytes.NewReader(b), frame.Limits{})
	require.NoError(t, err)
	require.Equal(t, frame.Version, f.Version)
	require.Equal(t, uint32(1), f.MetaLen)
	require.Equal(t, uint32(2), f.BodyLen)
}

func TestAppendFramePartsIsAppendFrameOfTheJoinedBody(t *testing.T) {
	h := frame.Header{Kind: frame.KindInvoke, ID: 9}
	for _, parts := range [][2]string{{"head-", "tail"}, {"", "tail"}, {"head", ""}, {"", ""}} {
		want := frame.AppendFrame(nil, h, []byte("m"), []byte(parts[0]+parts[1]))
		require.Equal(t, want, frame.AppendFrameParts(nil, h, []byte("m"), []byte(parts[0]), []byte(parts[1])), "%q", parts)
	}
}

func TestReadMetaDoesNotClobberBody(t *testing.T) {
	b := frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 1}, []byte("meta"), []byte("body"))
	f, err := frame.Read(bytes.NewReader(b), frame.Limits{})
	require.NoError(t, err)
	_ = append(f.Meta, "XXXX"...)
	require.Equal(t, []byte("body"), f.Body)
}

// header returns an encoded header that ParseHeader accepts with default limits, after mutate.
func header(mutate func(b []byte)) []byte {
	h := frame.Header{Version: frame.Version, Kind: frame.KindInvoke, ID: 5, Timeout: 100, MetaLen: 3, BodyLen: 4}
	b := h.Append(nil)
	if mutate != nil {
		mutate(b)
	}
	return b
}

func put32(off int, v uint32) func([]byte) {
	return func(b []byte) { b[off], b[off+1], b[off+2], b[off+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v) }
}

func set(off int, v byte) func([]byte) { return func(b []byte) { b[off] = v } }

var rejections = []struct {
	name   string
	mutate func([]byte)
	lim    frame.Limits
	is     error
	msg    []string // substrings the message must contain
}{
	{"version 0", set(0, 0), frame.Limits{}, frame.ErrVersion, []string{"version 0", "version 1"}},
	{"version 2", set(0, 2), frame.Limits{}, frame.ErrVersion, []string{"version 2", "version 1"}},
	{"version 255", set(0, 255), frame.Limits{}, frame.ErrVersion, []string{"version 255", "version 1"}},
	{"kind 0", set(1, 0), frame.Limits{}, frame.ErrProtocol, []string{"kind 0"}},
	{"kind 16", set(1, 16), frame.Limits{}, frame.ErrProtocol, []string{"kind 16"}},
	{"kind 255", set(1, 255), frame.Limits{}, frame.ErrProtocol, []string{"kind 255"}},
	{"flag 0x01", set(2, 0x01), frame.Limits{}, frame.ErrProtocol, []string{"invoke frame has flags 0x01", "only 0x06"}},
	{"shared message with an undefined flag", func(b []byte) { b[1], b[2] = byte(frame.KindMessage), 0x09 }, frame.Limits{}, frame.ErrProtocol, []string{"flags 0x09", "only 0x07"}},
	{"blob and inline blob", func(b []byte) { b[2] = 0x06; b[3] = 1 }, frame.Limits{}, frame.ErrProtocol, []string{"both blob and inline blob"}},
	{"blob without a descriptor", set(2, 0x02), frame.Limits{}, frame.ErrProtocol, []string{"flagged blob but passes no file descriptor"}},
	{"ping with a flag", func(b []byte) { b[1], b[2] = byte(frame.KindPing), 0x02 }, frame.Limits{}, frame.ErrProtocol, []string{"ping frame has flags 0x02", "only 0x00"}},
	{"flag 0x80", set(2, 0x80), frame.Limits{}, frame.ErrProtocol, []string{"flags 0x80"}},
	{"17 fds", set(3, 17), frame.Limits{}, frame.ErrProtocol, []string{"17 file descriptors", "limit is 16"}},
	{"255 fds", set(3, 255), frame.Limits{}, frame.ErrProtocol, []string{"255 file descriptors"}},
	{"meta over default", put32(16, frame.DefaultMaxMeta+1), frame.Limits{}, frame.ErrTooLarge, []string{"meta is 65537 bytes", "limit is 65536"}},
	{"meta 4 GiB", put32(16, 0xffffffff), frame.Limits{}, frame.ErrTooLarge, []string{"meta is 4294967295 bytes"}},
	{"meta over custom", put32(16, 11), frame.Limits{MaxMeta: 10}, frame.ErrTooLarge, []string{"meta is 11 bytes", "limit is 10"}},
	{"body over default", put32(20, frame.DefaultMaxBody+1), frame.Limits{}, frame.ErrTooLarge, []string{"body is 16777217 bytes", "limit is 16777216"}},
	{"body 4 GiB", put32(20, 0xffffffff), frame.Limits{}, frame.ErrTooLarge, []string{"invoke frame body is 4294967295 bytes"}},
	{"body over custom", put32(20, 101), frame.Limits{MaxBody: 100}, frame.ErrTooLarge, []string{"body is 101 bytes", "limit is 100"}},
}

func TestParseHeaderRejects(t *testing.T) {
	for _, c := range rejections {
		t.Run(c.name, func(t *testing.T) {
			_, err := frame.ParseHeader(header(c.mutate), c.lim)
			requireRejected(t, err, c.is, c.msg)
		})
	}
	_, err := frame.ParseHeader(header(nil)[:frame.HeaderSize-1], frame.Limits{})
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, err = frame.ParseHeader(nil, frame.Limits{})
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func requireRejected(t *testing.T, err, is error, msg []string) {
	t.Helper()
	require.ErrorIs(t, err, is)
	switch is {
	case frame.ErrVersion:
		require.ErrorIs(t, err, frame.ErrProtocol, "a version error is a protocol error")
	case frame.ErrProtocol:
		require.NotErrorIs(t, err, frame.ErrVersion)
		require.NotErrorIs(t, err, frame.ErrTooLarge)
	case frame.ErrTooLarge:
		require.NotErrorIs(t, err, frame.ErrProtocol)
	}
	for _, m := range msg {
		require.Contains(t, err.Error(), m)
	}
}

func TestParseHeaderAcceptsLimits(t *testing.T) {
	for name, c := range map[string]struct {
		mutate func([]byte)
		lim    frame.Limits
	}{
		"16 fds":             {set(3, frame.MaxFDs), frame.Limits{}},
		"meta at default":    {put32(16, frame.DefaultMaxMeta), frame.Limits{}},
		"body at default":    {put32(20, frame.DefaultMaxBody), frame.Limits{}},
		"meta at custom":     {put32(16, 10), frame.Limits{MaxMeta: 10}},
		"body at custom":     {put32(20, 100), frame.Limits{MaxBody: 100}},
		"body above default": {put32(20, frame.DefaultMaxBody+1), frame.Limits{MaxBody: 1 << 30}},
	} {
		_, err := frame.ParseHeader(header(c.mutate), c.lim)
		require.NoError(t, err, name)
	}
	h, err := frame.ParseHeader(header(func(b []byte) { b[1], b[2] = byte(frame.KindMessage), byte(frame.FlagShared) }), frame.Limits{})
	require.NoError(t, err)
	require.Equal(t, frame.FlagShared, h.Flags)
	_, err = frame.ParseHeader(header(func(b []byte) { b[1], b[2] = byte(frame.KindSubscribe), byte(frame.FlagShared) }), frame.Limits{})
	require.ErrorIs(t, err, frame.ErrProtocol, "the shared subscription is named in the body, not by a flag")
	for k := frame.KindHello; k <= frame.KindWithdraw; k++ {
		h, err := frame.ParseHeader(header(set(1, byte(k))), frame.Limits{})
		require.NoError(t, err, k)
		require.Equal(t, k, h.Kind)
	}
}

// guardReader serves b and fails the test if read past it.
type guardReader struct {
	t *testing.T
	b []byte
}

func (r *guardReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		r.t.Errorf("Read read past the header")
		return 0, errors.New("read past the header")
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// TestReadRejectsBeforeReading: a bad header is rejected without reading or allocating
// what it declares.
func TestReadRejectsBeforeReading(t *testing.T) {
	for _, c := range rejections {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := frame.Read(&guardReader{t: t, b: header(c.mutate)}, c.lim)
			runtime.ReadMemStats(&after)
			requireRejected(t, err, c.is, c.msg)
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<10), "Read allocated for a rejected frame")
		})
	}
}

func TestReadTruncated(t *testing.T) {
	b := frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 1}, []byte("meta"), []byte("body"))
	for n := 1; n < len(b); n++ {
		_, err := frame.Read(bytes.NewReader(b[:n]), frame.Limits{})
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "%d bytes", n)
		if n < frame.HeaderSize {
			require.Contains(t, err.Error(), "reading header")
		} else {
			require.Contains(t, err.Error(), "reading invoke frame meta and body (8 bytes)")
		}
	}
	_, err := frame.Read(bytes.NewReader(nil), frame.Limits{})
	require.Same(t, io.EOF, err)
}

func TestReadPassesReaderErrors(t *testing.T) {
	boom := errors.New("boom")
	_, err := frame.Read(iotest.ErrReader(boom), frame.Limits{})
	require.ErrorIs(t, err, boom)

	b := frame.AppendFrame(nil, frame.Header{Kind: frame.KindPublish, ID: 1}, []byte("t"), []byte("payload"))
	_, err = frame.Read(io.MultiReader(bytes.NewReader(b[:frame.HeaderSize+2]), iotest.ErrReader(boom)), frame.Limits{})
	require.ErrorIs(t, err, boom)
	require.Contains(t, err.Error(), "publish")
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

func TestWriteError(t *testing.T) {
	boom := errors.New("boom")
	err := frame.Write(errWriter{boom}, frame.Header{Kind: frame.KindPing}, nil, nil)
	require.ErrorIs(t, err, boom)
	require.Contains(t, err.Error(), "ping")
}

// countingWriter counts Write calls.
type countingWriter struct {
	bytes.Buffer
	calls int
}

func (w *countingWriter) Write(p []byte) (int, error) { w.calls++; return w.Buffer.Write(p) }

func TestWriteIsOneWrite(t *testing.T) {
	var w countingWriter
	require.NoError(t, frame.Write(&w, frame.Header{Kind: frame.KindInvoke, ID: 1}, []byte("m"), []byte("b")))
	require.Equal(t, 1, w.calls)
}

func TestAllocations(t *testing.T) {
	h := frame.Header{Version: frame.Version, Kind: frame.KindInvoke, ID: 1, MetaLen: 4, BodyLen: 4}
	hb := make([]byte, 0, frame.HeaderSize)
	require.Zero(t, testing.AllocsPerRun(100, func() { h.Put(hb[:frame.HeaderSize]) }), "Put")
	require.Zero(t, testing.AllocsPerRun(100, func() { hb = h.Append(hb[:0]) }), "Append")
	require.Zero(t, testing.AllocsPerRun(100, func() {
		if _, err := frame.ParseHeader(hb, frame.Limits{}); err != nil {
			t.Fatal(err)
		}
	}), "ParseHeader")
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = frame.Kind(3).String() }), "Kind.String")

	buf := frame.AppendFrame(make([]byte, 0, 64), frame.Header{Kind: frame.KindInvoke, ID: 1}, []byte("meta"), []byte("body"))
	require.Zero(t, testing.AllocsPerRun(100, func() { buf = frame.AppendFrame(buf[:0], h, []byte("meta"), []byte("body")) }), "AppendFrame")

	r := bytes.NewReader(buf)
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() {
		r.Reset(buf)
		if _, err := frame.Read(r, frame.Limits{}); err != nil {
			t.Fatal(err)
		}
	}), "Read with meta and body")
	ping := frame.AppendFrame(nil, frame.Header{Kind: frame.KindPing}, nil, nil)
	require.Zero(t, testing.AllocsPerRun(100, func() {
		r.Reset(ping)
		if _, err := frame.Read(r, frame.Limits{}); err != nil {
			t.Fatal(err)
		}
	}), "Read without meta or body")
}

func TestErrorTexts(t *testing.T) {
	for _, err := range []error{frame.ErrProtocol, frame.ErrTooLarge, frame.ErrVersion} {
		require.NotEmpty(t, err.Error())
		require.False(t, strings.HasPrefix(err.Error(), "frame:"), "the root package re-exports %q", err)
	}
	require.ErrorIs(t, frame.ErrVersion, frame.ErrProtocol)
	require.NotErrorIs(t, frame.ErrProtocol, frame.ErrVersion)
	require.NotErrorIs(t, frame.ErrTooLarge, frame.ErrProtocol)
}

func TestRegisterBodies(t *testing.T) {
	b := frame.AppendRegister(nil, 0x0102030405060708, []byte("addr"))
	require.Equal(t, []byte{1, 2, 3, 4, 5, 6, 7, 8, 'a', 'd', 'd', 'r'}, b)
	id, payload, err := frame.ParseRegister(b)
	require.NoError(t, err)
	require.Equal(t, uint64(0x0102030405060708), id)
	require.Equal(t, []byte("addr"), payload)
	_, payload, err = frame.ParseRegister(b[:8])
	require.NoError(t, err)
	require.Empty(t, payload)
	_, _, err = frame.ParseRegister(b[:7])
	require.ErrorIs(t, err, frame.ErrProtocol)

	id, err = frame.ParseWithdraw(b[:8])
	require.NoError(t, err)
	require.Equal(t, uint64(0x0102030405060708), id)
	for _, n := range []int{0, 7, 9} {
		_, err = frame.ParseWithdraw(make([]byte, n))
		require.ErrorIs(t, err, frame.ErrProtocol, n)
	}
}

func TestInlineBlobBodies(t *testing.T) {
	b := frame.AppendInlineBlob(nil, []byte("hi"), []byte("BLOB"))
	require.Equal(t, []byte{0, 0, 0, 2, 'h', 'i', 'B', 'L', 'O', 'B'}, b)
	require.Equal(t, len(b), frame.InlineBlobSize(2, 4))
	data, blob, err := frame.SplitInlineBlob(b)
	require.NoError(t, err)
	require.Equal(t, "hi", string(data))
	require.Equal(t, "BLOB", string(blob))
	data = append(data, 'X')
	require.Equal(t, "BLOB", string(blob), "appending to data must not overwrite the blob")

	data, blob, err = frame.SplitInlineBlob([]byte{0, 0, 0, 0})
	require.NoError(t, err)
	require.Empty(t, data)
	require.Empty(t, blob)
	for _, bad := range [][]byte{nil, {0, 0, 0}, {0, 0, 0, 3, 'a', 'b'}, {0xff, 0xff, 0xff, 0xff}} {
		_, _, err := frame.SplitInlineBlob(bad)
		require.ErrorIs(t, err, frame.ErrProtocol, bad)
	}
}

func TestFlagsPerKind(t *testing.T) {
	for k := frame.KindHello; k <= frame.KindWithdraw; k++ {
		allowed := frame.AllowedFlags(k)
		for bit := range 8 {
			f := frame.Flags(1 << bit)
			_, err := frame.ParseHeader(header(func(b []byte) { b[1], b[2], b[3] = byte(k), byte(f), 1 }), frame.Limits{})
			if allowed&f != 0 {
				require.NoError(t, err, "%s with flag 0x%02x", k, f)
			} else {
				require.ErrorIs(t, err, frame.ErrProtocol, "%s with flag 0x%02x", k, f)
			}
		}
	}
	require.Equal(t, frame.FlagShared|frame.FlagBlob|frame.FlagInlineBlob, frame.AllowedFlags(frame.KindMessage))
	require.Equal(t, frame.FlagBlob|frame.FlagInlineBlob, frame.AllowedFlags(frame.KindInvoke))
	require.Zero(t, frame.AllowedFlags(frame.KindSubscribe))
}

package frame_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/frame"
)

func TestRemoteCodesRoundTrip(t *testing.T) {
	for _, c := range []struct {
		codes []string
		msg   string
	}{
		{[]string{}, "no codes"},
		{[]string{"not-found"}, "user 7: not found"},
		{[]string{"a", "b.c/d:e_f", strings.Repeat("x", frame.MaxCode)}, ""},
	} {
		b := frame.AppendRemoteCodes(nil, c.codes, c.msg)
		codes, msg, err := frame.ParseRemoteCodes(b)
		require.NoError(t, err)
		require.Equal(t, c.codes, codes)
		require.Equal(t, c.msg, msg)
	}
	require.Equal(t, []byte{2, 1, 'a', 2, 'b', 'c', 'h', 'i'}, frame.AppendRemoteCodes(nil, []string{"a", "bc"}, "hi"))
}

func TestRemoteCodesRejects(t *testing.T) {
	for name, c := range map[string]struct {
		b   []byte
		msg string
	}{
		"empty":          {nil, "body is empty"},
		"too many":       {[]byte{frame.MaxCodes + 1}, "33 codes, the limit is 32"},
		"truncated":      {[]byte{1, 5, 'a'}, "truncated in code 1 of 1"},
		"missing code":   {[]byte{2, 1, 'a'}, "truncated in code 2 of 2"},
		"empty code":     {[]byte{1, 0}, `invalid code ""`},
		"space in code":  {[]byte{1, 3, 'a', ' ', 'b'}, `invalid code "a b"`},
		"non-ASCII code": {[]byte{1, 2, 0xc3, 0xbc}, "invalid code"},
	} {
		_, _, err := frame.ParseRemoteCodes(c.b)
		require.ErrorIs(t, err, frame.ErrProtocol, name)
		require.ErrorContains(t, err, c.msg, name)
	}
	require.Panics(t, func() { frame.AppendRemoteCodes(nil, []string{"no spaces"}, "") })
	require.Panics(t, func() { frame.AppendRemoteCodes(nil, make([]string, frame.MaxCodes+1), "") })
}

func FuzzRemoteCodes(f *testing.F) {
	f.Add(frame.AppendRemoteCodes(nil, []string{"not-found"}, "msg"))
	f.Add([]byte{3, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		codes, msg, err := frame.ParseRemoteCodes(b)
		if err != nil {
			return
		}
		require.Equal(t, b, frame.AppendRemoteCodes(nil, codes, msg))
	})
}

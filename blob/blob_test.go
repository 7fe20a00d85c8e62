package blob

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// pattern returns n bytes that differ from page to page and from the zero page.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

func TestNewHoldsTheBytes(t *testing.T) {
	data := pattern(100_003)
	b, err := New(data)
	require.NoError(t, err)
	data[0]++ // New copied: the caller's slice is its own
	require.Equal(t, 100_003, b.Len())
	require.Equal(t, pattern(100_003), b.Bytes())
	require.NoError(t, b.Close())
	require.NoError(t, b.Close(), "Close is idempotent")
	require.Nil(t, b.Bytes())
	require.Zero(t, b.Len())
}

func TestCreateFillsInPlace(t *testing.T) {
	b, err := Create(3<<20+5, func(p []byte) error {
		require.Len(t, p, 3<<20+5)
		require.Equal(t, make([]byte, len(p)), p, "fill gets zeroed memory")
		copy(p, pattern(len(p)))
		return nil
	})
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, pattern(3<<20+5), b.Bytes())
}

func TestCreateReturnsTheFillError(t *testing.T) {
	boom := errors.New("boom")
	b, err := Create(1<<20, func([]byte) error { return boom })
	require.ErrorIs(t, err, boom)
	require.Nil(t, b)
	_, err = Create(-1, func([]byte) error { return nil })
	require.Error(t, err)
}

func TestEmptyBlob(t *testing.T) {
	for _, mk := range []func() (*Blob, error){
		func() (*Blob, error) { return New(nil) },
		func() (*Blob, error) { return Create(0, func(p []byte) error { return nil }) },
	} {
		b, err := mk()
		require.NoError(t, err)
		require.Zero(t, b.Len())
		require.Empty(t, b.Bytes())
		require.NoError(t, b.Close())
	}
}

func TestFromBytes(t *testing.T) {
	p := []byte("inline payload")
	b := FromBytes(p)
	require.Nil(t, b.File())
	require.Equal(t, "inline payload", string(b.Bytes()))
	require.Equal(t, &p[0], &b.Bytes()[0], "FromBytes does not copy")
	require.NoError(t, b.Close())
	require.NoError(t, b.Close())
	require.Nil(t, b.Bytes())
	require.NotNil(t, FromBytes(nil).Bytes())
}

func TestConcurrentReaders(t *testing.T) {
	data := pattern(1 << 20)
	b, err := New(data)
	require.NoError(t, err)
	defer b.Close()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if !bytes.Equal(b.Bytes(), data) || b.Len() != len(data) {
					t.Error("a reader saw other bytes")
					return
				}
			}
		}()
	}
	wg.Wait()
}

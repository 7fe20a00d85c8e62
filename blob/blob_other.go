//go:build !unix

package blob

import (
	"errors"
	"fmt"
	"os"
)

// This system has no shared-memory blobs: New and Create return heap-backed Blobs
// (File is nil) and Open is unsupported.

// New returns a heap-backed Blob holding a copy of data.
func New(data []byte) (*Blob, error) {
	return FromBytes(append([]byte(nil), data...)), nil
}

// Create returns a heap-backed Blob of size bytes that fill produced in place. If fill
// returns an error, Create returns it, wrapped.
func Create(size int, fill func(b []byte) error) (*Blob, error) {
	if size < 0 {
		return nil, fmt.Errorf("blob: negative size %d", size)
	}
	b := make([]byte, size)
	if err := fill(b); err != nil {
		return nil, fmt.Errorf("blob: fill: %w", err)
	}
	return FromBytes(b), nil
}

// Open is unsupported on this system: it closes f and returns an error matching
// errors.ErrUnsupported.
func Open(f *os.File) (*Blob, error) {
	if f != nil {
		f.Close()
	}
	return nil, fmt.Errorf("blob: Open: shared-memory blobs on this system: %w", errors.ErrUnsupported)
}

func munmap([]byte) error { return nil }

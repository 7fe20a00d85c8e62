//go:build unix && !linux

package blob

import (
	"fmt"
	"os"
)

// Without memfd and seals, a blob is an unlinked temporary file in os.TempDir, mapped
// read-only. Nothing stops its sender from changing it after passing it: see the
// package documentation.

// New copies data into a new unlinked temporary file and maps it read-only. It blocks
// for the copy.
func New(data []byte) (*Blob, error) {
	f, err := newTempFile(len(data))
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: writing %d bytes to the temporary file: %w", len(data), err)
	}
	return mapReadOnly(f, len(data))
}

// Create makes a blob of size bytes produced in place: fill receives a writable
// mapping of the (zeroed) memory and must not keep it after returning; then the blob is
// mapped read-only. If fill returns an error, Create releases everything and returns
// that error, wrapped.
func Create(size int, fill func(b []byte) error) (*Blob, error) {
	if size < 0 {
		return nil, fmt.Errorf("blob: negative size %d", size)
	}
	f, err := newTempFile(size)
	if err != nil {
		return nil, err
	}
	if err := fillMapped(f, size, fill); err != nil {
		f.Close()
		return nil, err
	}
	return mapReadOnly(f, size)
}

// Open maps the blob that f, a descriptor received from another process, holds. It
// takes ownership of f: on success the Blob closes it, on error Open has closed it.
// This system has no seals: Open accepts any regular file and cannot tell whether its
// sender may still change it.
func Open(f *os.File) (*Blob, error) {
	if f == nil {
		return nil, fmt.Errorf("blob: Open of a nil file")
	}
	size, err := fileSize(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return mapReadOnly(f, size)
}

// newTempFile creates an unlinked temporary file of size bytes.
func newTempFile(size int) (*os.File, error) {
	f, err := os.CreateTemp("", "cluster-blob-*")
	if err != nil {
		return nil, fmt.Errorf("blob: creating a temporary file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: unlinking the temporary file: %w", err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: sizing the temporary file to %d bytes: %w", size, err)
	}
	return f, nil
}

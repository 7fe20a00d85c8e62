//go:build unix

package blob

import (
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"
)

func munmap(b []byte) error { return unix.Munmap(b) }

// fillMapped maps f's first size bytes writable and shared, lets fill write them and
// unmaps them again (on Linux, F_SEAL_WRITE requires that no writable mapping is left).
func fillMapped(f *os.File, size int, fill func([]byte) error) error {
	if size == 0 {
		if err := fill([]byte{}); err != nil {
			return fmt.Errorf("blob: fill: %w", err)
		}
		return nil
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("blob: mapping %d bytes for writing: %w", size, err)
	}
	ferr := fill(m)
	if err := unix.Munmap(m); err != nil && ferr == nil {
		return fmt.Errorf("blob: unmapping the writable mapping: %w", err)
	}
	if ferr != nil {
		return fmt.Errorf("blob: fill: %w", ferr)
	}
	return nil
}

// mapReadOnly returns a Blob owning f and a read-only shared mapping of its size bytes
// (none when size is 0). It closes f on error.
func mapReadOnly(f *os.File, size int) (*Blob, error) {
	if size == 0 {
		return newMapped(f, nil), nil
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: mapping %d bytes read-only: %w", size, err)
	}
	return newMapped(f, m), nil
}

// fileSize returns f's size, which must be a regular file small enough to map.
func fileSize(f *os.File) (int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("blob: fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, fmt.Errorf("blob: descriptor is not a regular file (mode %#o)", st.Mode)
	}
	if st.Size < 0 || uint64(st.Size) > math.MaxInt {
		return 0, fmt.Errorf("blob: size %d cannot be mapped", st.Size)
	}
	return int(st.Size), nil
}

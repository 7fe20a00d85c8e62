package blob

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// memfdName is what /proc/<pid>/fd and /proc/<pid>/maps show ("memfd:cluster-blob").
const memfdName = "cluster-blob"

// requiredSeals are what Open insists on: with them nobody can change the bytes, and
// F_SEAL_WRITE also guarantees that no writable mapping exists.
const requiredSeals = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK

// allSeals are what New and Create set: requiredSeals, and F_SEAL_SEAL so that no one
// can add (or, as always, remove) seals later.
const allSeals = requiredSeals | unix.F_SEAL_SEAL

// New copies data into a new sealed memfd and maps it read-only. It blocks for the
// copy (write(2)), so its cost grows with len(data); use Create to produce the bytes in
// place instead.
func New(data []byte) (*Blob, error) {
	f, err := newMemfd(len(data))
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: writing %d bytes to the memfd: %w", len(data), err)
	}
	return sealAndMap(f, len(data))
}

// Create makes a blob of size bytes produced in place: fill receives a writable
// mapping of the (zeroed) memory and must not keep it after returning. Then the
// writable mapping is removed, the memfd sealed and mapped read-only. If fill returns
// an error, Create releases everything and returns that error, wrapped.
func Create(size int, fill func(b []byte) error) (*Blob, error) {
	if size < 0 {
		return nil, fmt.Errorf("blob: negative size %d", size)
	}
	f, err := newMemfd(size)
	if err != nil {
		return nil, err
	}
	if err := fillMapped(f, size, fill); err != nil {
		f.Close()
		return nil, err
	}
	return sealAndMap(f, size)
}

// newMemfd creates a sealable, close-on-exec, non-executable memfd of size bytes.
func newMemfd(size int) (*os.File, error) {
	fd, err := unix.MemfdCreate(memfdName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) {
		// MFD_NOEXEC_SEAL is Linux 6.3+; older kernels refuse the unknown flag.
		fd, err = unix.MemfdCreate(memfdName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+memfdName)
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: sizing the memfd to %d bytes: %w", size, err)
	}
	return f, nil
}

// sealAndMap seals f against every change and returns it mapped read-only. It closes f
// on error.
func sealAndMap(f *os.File, size int) (*Blob, error) {
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, allSeals); err != nil {
		f.Close()
		return nil, fmt.Errorf("blob: sealing the memfd: %w", err)
	}
	return mapReadOnly(f, size)
}

// Open maps the blob that f, a descriptor received from another process, holds. It
// takes ownership of f: on success the Blob closes it, on error Open has closed it.
//
// f must be a memfd sealed against write, grow and shrink, else the error matches
// ErrNotSealed: an unsealed memory file could be changed by its sender while this
// process reads it. The mapping is read-only and shares the sender's pages; Open costs
// the same whatever the size (pages are touched only when read). An empty blob is valid.
// Open does not bound the size: a receiver with a limit checks Len before reading, and
// Closes a blob that is too large, which has then cost it nothing.
func Open(f *os.File) (*Blob, error) {
	if f == nil {
		return nil, errors.New("blob: Open of a nil file")
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: F_GET_SEALS: %w (not a memfd?)", ErrNotSealed, err)
	}
	if missing := requiredSeals &^ seals; missing != 0 {
		f.Close()
		return nil, fmt.Errorf("%w: seals %s are missing (it has %s)", ErrNotSealed, sealNames(missing), sealNames(seals))
	}
	size, err := fileSize(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return mapReadOnly(f, size)
}

func sealNames(s int) string {
	var names []string
	for _, n := range []struct {
		bit  int
		name string
	}{
		{unix.F_SEAL_SEAL, "seal"}, {unix.F_SEAL_SHRINK, "shrink"}, {unix.F_SEAL_GROW, "grow"},
		{unix.F_SEAL_WRITE, "write"}, {unix.F_SEAL_FUTURE_WRITE, "future-write"}, {unix.F_SEAL_EXEC, "exec"},
	} {
		if s&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

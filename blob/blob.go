package blob

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// Blob is an immutable run of bytes, backed by shared memory that can be passed to
// another process as a file descriptor (File), or by the heap (FromBytes, and New on
// systems without shared memory support). Create one with New, Create, Open or
// FromBytes; the zero Blob is not usable.
//
// Its methods are safe for concurrent use, but Close must not race with readers of
// Bytes: after Close the memory is gone.
type Blob struct {
	data atomic.Pointer[[]byte] // nil after Close
	res  *resources             // nil for a heap-backed Blob

	closeOnce sync.Once
	closeErr  error
	cleanup   runtime.Cleanup
}

// resources is what a shared-memory Blob must release: kept apart from Blob so that the
// safety-net cleanup can hold it without keeping the Blob reachable.
type resources struct {
	f       *os.File
	mapping []byte // nil when the blob is empty (nothing mapped)
}

func (r *resources) release() error {
	var err error
	if r.mapping != nil {
		err = munmap(r.mapping)
		r.mapping = nil
	}
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// newMapped returns a Blob that owns f and the read-only mapping m (nil if empty), with
// a cleanup that releases both should the Blob become unreachable without Close.
func newMapped(f *os.File, m []byte) *Blob {
	b := &Blob{res: &resources{f: f, mapping: m}}
	if m == nil {
		m = []byte{}
	}
	b.data.Store(&m)
	b.cleanup = runtime.AddCleanup(b, func(r *resources) { _ = r.release() }, b.res)
	return b
}

// FromBytes returns a heap-backed Blob holding p, which it does not copy: the caller
// must not modify p afterwards. It has no descriptor (File returns nil). Use it for a
// payload that arrived inline because the connection could not pass descriptors, so
// that receivers handle both cases through one type.
func FromBytes(p []byte) *Blob {
	b := &Blob{}
	if p == nil {
		p = []byte{}
	}
	b.data.Store(&p)
	return b
}

// Bytes returns the blob's contents. For a shared-memory Blob this is a read-only
// mapping: writing to it is a fault that crashes the program (a panic only under
// debug.SetPanicOnFault). The slice is valid until Close; it does not keep the Blob
// alive, so keep the Blob reachable (and unclosed) while the slice is in use. After
// Close, Bytes returns nil.
func (b *Blob) Bytes() []byte {
	if p := b.data.Load(); p != nil {
		return *p
	}
	return nil
}

// Len returns the size of the blob in bytes; 0 after Close.
func (b *Blob) Len() int { return len(b.Bytes()) }

// File returns the descriptor to pass to another process, or nil for a heap-backed
// Blob. The Blob owns it: do not close it, and do not use it after Close. Passing it
// (SCM_RIGHTS) gives the receiver its own duplicate.
func (b *Blob) File() *os.File {
	if b.res == nil {
		return nil
	}
	return b.res.f
}

// Close unmaps the blob and closes its descriptor. It is idempotent: later calls
// return the first call's result. Bytes must not be used after Close; a mapping some
// other process made of the same memory is not affected.
//
// A Blob that becomes unreachable without Close is released by a runtime cleanup, as a
// safety net only: it runs at an unpredictable time, if ever.
func (b *Blob) Close() error {
	b.closeOnce.Do(func() {
		b.data.Store(nil)
		if b.res != nil {
			b.cleanup.Stop()
			b.closeErr = b.res.release()
		}
	})
	return b.closeErr
}

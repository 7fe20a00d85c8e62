package blob

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster/internal/fdtest"
)

// countMappings returns how many mappings of blob memfds this process has.
func countMappings(t testing.TB) int {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	require.NoError(t, err)
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "memfd:"+memfdName) {
			n++
		}
	}
	require.NoError(t, sc.Err())
	return n
}

// baseline records the descriptors and blob mappings open now and, at the end of the
// test, requires that both are back to it.
func baseline(t *testing.T) {
	t.Helper()
	fds, maps := fdtest.Take(t), countMappings(t)
	t.Cleanup(func() {
		require.Empty(t, fds.Added(t), "descriptors leaked")
		require.Equal(t, maps, countMappings(t), "mappings leaked")
	})
}

// pass sends f's descriptor over a real socketpair with SCM_RIGHTS and returns what
// the other end received, as another process would.
func pass(t *testing.T, f *os.File) *os.File {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	require.NoError(t, unix.Sendmsg(sp[0], []byte{0}, unix.UnixRights(int(f.Fd())), nil, 0))
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, flags, _, err := unix.Recvmsg(sp[1], buf, oob, unix.MSG_CMSG_CLOEXEC)
	require.NoError(t, err)
	require.Zero(t, flags&unix.MSG_CTRUNC)
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	fds, err := unix.ParseUnixRights(&msgs[0])
	require.NoError(t, err)
	require.Len(t, fds, 1)
	return os.NewFile(uintptr(fds[0]), "received")
}

func TestRoundTripOverASocketpair(t *testing.T) {
	baseline(t)
	data := pattern(1<<20 + 3)
	b, err := New(data)
	require.NoError(t, err)
	defer b.Close()
	r, err := Open(pass(t, b.File()))
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, data, r.Bytes())
	require.Equal(t, len(data), r.Len())
	require.NotEqual(t, uintptr(unsafe.Pointer(unsafe.SliceData(b.Bytes()))), uintptr(unsafe.Pointer(unsafe.SliceData(r.Bytes()))), "two mappings")
}

// pfn returns the physical frame number behind the page holding p, or 0 if this
// process may not see frame numbers (it needs CAP_SYS_ADMIN).
func pfn(t *testing.T, p *byte) uint64 {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	require.NoError(t, err)
	defer f.Close()
	var e [8]byte
	_, err = f.ReadAt(e[:], int64(uintptr(unsafe.Pointer(p))/uintptr(os.Getpagesize())*8))
	require.NoError(t, err)
	v := binary.LittleEndian.Uint64(e[:])
	require.NotZero(t, v>>63, "page not present")
	return v & (1<<55 - 1)
}

func TestReceiverSharesTheSendersPages(t *testing.T) {
	b, err := New(pattern(3 * os.Getpagesize()))
	require.NoError(t, err)
	defer b.Close()
	r, err := Open(pass(t, b.File()))
	require.NoError(t, err)
	defer r.Close()
	copied := bytes.Clone(r.Bytes())    // reading faults the receiver's pages in
	require.Equal(t, b.Bytes(), copied) // and the sender's
	page := os.Getpagesize()
	for _, off := range []int{0, page, 2 * page} {
		sent, got := pfn(t, &b.Bytes()[off]), pfn(t, &r.Bytes()[off])
		if sent == 0 {
			t.Skip("frame numbers hidden in /proc/self/pagemap (needs CAP_SYS_ADMIN)")
		}
		require.Equal(t, sent, got, "page at %d: the receiver's mapping must be the sender's memory", off)
		require.NotEqual(t, sent, pfn(t, &copied[off]), "a copy lives elsewhere")
	}
}

func TestSealsAreSet(t *testing.T) {
	b, err := New([]byte("sealed"))
	require.NoError(t, err)
	defer b.Close()
	seals, err := unix.FcntlInt(b.File().Fd(), unix.F_GET_SEALS, 0)
	require.NoError(t, err)
	require.Equal(t, allSeals, seals&allSeals, "have %s", sealNames(seals))
}

func TestReceiverCannotModify(t *testing.T) {
	baseline(t)
	data := pattern(2*os.Getpagesize() + 10)
	b, err := Create(len(data), func(p []byte) error { copy(p, data); return nil })
	require.NoError(t, err)
	defer b.Close()
	r, err := Open(pass(t, b.File()))
	require.NoError(t, err)
	defer r.Close()
	fd := int(r.File().Fd())
	size := r.Len()

	_, err = unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	require.ErrorIs(t, err, unix.EPERM, "a writable shared mapping")
	_, err = unix.Pwrite(fd, []byte("x"), 0)
	require.ErrorIs(t, err, unix.EPERM, "pwrite")
	_, err = unix.Write(fd, []byte("x"))
	require.ErrorIs(t, err, unix.EPERM, "write")
	require.ErrorIs(t, unix.Ftruncate(fd, int64(size+1)), unix.EPERM, "grow")
	require.ErrorIs(t, unix.Ftruncate(fd, int64(size-1)), unix.EPERM, "shrink")
	require.ErrorIs(t, unix.Ftruncate(fd, 0), unix.EPERM, "truncate")
	require.ErrorIs(t, unix.Fallocate(fd, 0, int64(size), 4096), unix.EPERM, "fallocate")
	_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE)
	require.ErrorIs(t, err, unix.EPERM, "adding seals (F_SEAL_SEAL)")
	// The read-only mapping cannot be made writable either.
	require.ErrorIs(t, unix.Mprotect(r.Bytes()[:os.Getpagesize()], unix.PROT_READ|unix.PROT_WRITE), unix.EACCES, "mprotect")
	// Seals are never removed: they are all still there.
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	require.NoError(t, err)
	require.Equal(t, allSeals, seals&allSeals)
	// A private copy-on-write mapping is allowed, but writing to it changes nothing shared.
	priv, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	require.NoError(t, err)
	priv[0]++
	require.NoError(t, unix.Munmap(priv))
	require.Equal(t, data, r.Bytes())
	require.Equal(t, data, b.Bytes())
}

func TestWritingToTheMappingFaults(t *testing.T) {
	b, err := New([]byte("read only"))
	require.NoError(t, err)
	defer b.Close()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	faulted := func() (faulted bool) {
		defer func() {
			if recover() != nil {
				faulted = true
			}
		}()
		b.Bytes()[0] = 'R'
		return false
	}()
	require.True(t, faulted, "a write to the blob's mapping must fault")
	require.Equal(t, "read only", string(b.Bytes()))
}

func TestOpenRefusesUnsealedMemory(t *testing.T) {
	baseline(t)
	memfd := func(t *testing.T, seals int) *os.File {
		fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		require.NoError(t, err)
		require.NoError(t, unix.Ftruncate(fd, 4096))
		if seals != 0 {
			_, err = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals)
			require.NoError(t, err)
		}
		return os.NewFile(uintptr(fd), "memfd")
	}
	tmp := func(t *testing.T) *os.File {
		f, err := os.CreateTemp(t.TempDir(), "")
		require.NoError(t, err)
		require.NoError(t, f.Truncate(4096))
		return f
	}
	pipe := func(t *testing.T) *os.File {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		w.Close()
		return r
	}
	for _, tt := range []struct {
		name string
		file func(*testing.T) *os.File
		want string
	}{
		{"unsealed memfd", func(t *testing.T) *os.File { return memfd(t, 0) }, "write"},
		{"memfd sealed against grow and shrink only", func(t *testing.T) *os.File { return memfd(t, unix.F_SEAL_GROW|unix.F_SEAL_SHRINK) }, "seals write are missing"},
		{"memfd sealed against future writes only", func(t *testing.T) *os.File {
			return memfd(t, unix.F_SEAL_FUTURE_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL)
		}, "seals write are missing"},
		{"memfd with no way to seal", func(t *testing.T) *os.File {
			fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC)
			require.NoError(t, err)
			return os.NewFile(uintptr(fd), "memfd")
		}, "missing"},
		{"regular file", tmp, ""}, // EINVAL on most filesystems, "missing" on tmpfs
		{"pipe", pipe, "F_GET_SEALS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := fdtest.Take(t)
			f := tt.file(t)
			b, err := Open(f)
			require.ErrorIs(t, err, ErrNotSealed)
			require.ErrorContains(t, err, tt.want)
			require.Nil(t, b)
			require.Empty(t, before.Added(t), "Open closes f on error")
		})
	}
}

func TestNoLeaks(t *testing.T) {
	baseline(t)
	for range 20 {
		b, err := New(pattern(64 << 10))
		require.NoError(t, err)
		r, err := Open(pass(t, b.File()))
		require.NoError(t, err)
		require.Equal(t, b.Bytes(), r.Bytes())
		require.NoError(t, r.Close())
		require.NoError(t, b.Close())
		require.NoError(t, b.Close())
		require.NoError(t, r.Close())
		_, err = Create(64<<10, func(p []byte) error { p[0] = 1; return errors.New("no") })
		require.Error(t, err)
	}
}

func TestCreateWithAFailingFillLeaksNothing(t *testing.T) {
	baseline(t)
	var during int
	b, err := Create(1<<20, func(p []byte) error {
		during = countMappings(t)
		return errors.New("fill failed")
	})
	require.ErrorContains(t, err, "fill failed")
	require.Nil(t, b)
	require.Equal(t, 1, during, "fill ran on the one writable mapping")
}

func TestSixtyFourMiB(t *testing.T) {
	baseline(t)
	const size = 64 << 20
	b, err := Create(size, func(p []byte) error {
		for i := 0; i < len(p); i += 4096 {
			binary.BigEndian.PutUint64(p[i:], uint64(i))
		}
		return nil
	})
	require.NoError(t, err)
	defer b.Close()
	r, err := Open(pass(t, b.File()))
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, size, r.Len())
	for i := 0; i < size; i += 4096 {
		require.Equal(t, uint64(i), binary.BigEndian.Uint64(r.Bytes()[i:]))
	}
}

func TestEmptyBlobPasses(t *testing.T) {
	baseline(t)
	b, err := New(nil)
	require.NoError(t, err)
	defer b.Close()
	require.NotNil(t, b.File())
	r, err := Open(pass(t, b.File()))
	require.NoError(t, err)
	require.Zero(t, r.Len())
	require.NoError(t, r.Close())
}

func TestCleanupIsASafetyNet(t *testing.T) {
	before, maps := fdtest.Take(t), countMappings(t)
	func() {
		b, err := New(pattern(8192))
		require.NoError(t, err)
		require.Len(t, before.Added(t), 1)
		_ = b // dropped without Close
	}()
	require.Eventually(t, func() bool {
		runtime.GC()
		return len(before.Added(t)) == 0 && countMappings(t) == maps
	}, 10*time.Second, time.Millisecond)
}

//go:build !windows

package cluster_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/blob"
	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/internal/fdtest"
)

// blobService is a Service that works with blobs and files in memory: what a Leader's
// real client would do with them, minus the server.
type blobService struct {
	mu   sync.Mutex
	subs map[string][]func(cluster.Message)
}

func newBlobService(context.Context) (cluster.Service, error) {
	return &blobService{subs: make(map[string][]func(cluster.Message))}, nil
}

func (s *blobService) Invoke(_ context.Context, method string, req cluster.Message) (cluster.Message, error) {
	switch method {
	case "echo": // the request back, Blob and Files included
		return req.Clone()
	case "make": // a blob of the size in Data
		n, err := strconv.Atoi(string(req.Data))
		if err != nil {
			return cluster.Message{}, err
		}
		b, err := blob.Create(n, func(p []byte) error { fillPattern(p, byte(n)); return nil })
		return cluster.Message{Data: []byte("made"), Blob: b}, err
	case "sum": // what the Leader saw: the blob's size and checksum
		if req.Blob == nil {
			return cluster.Message{}, errors.New("no blob")
		}
		return cluster.Message{Data: []byte(fmt.Sprintf("%d:%d", req.Blob.Len(), checksum(req.Blob.Bytes())))}, nil
	case "tamper": // try to change the sender's sealed blob; report what happened
		return cluster.Message{Data: []byte(tamper(req.Blob))}, nil
	case "write": // write Data into the first file passed
		if len(req.Files) == 0 {
			return cluster.Message{}, errors.New("no file")
		}
		_, err := req.Files[0].Write(req.Data)
		return cluster.Message{}, err
	}
	return cluster.Message{}, fmt.Errorf("no method %q", method)
}

func (s *blobService) Subscribe(_ context.Context, topic string, emit func(cluster.Message)) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs[topic] = append(s.subs[topic], emit)
	i := len(s.subs[topic]) - 1
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.subs[topic][i] = nil
	}, nil
}

// Publish emits a clone of msg to the topic's subscription: emit takes what it is given.
func (s *blobService) Publish(_ context.Context, topic string, msg cluster.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, emit := range s.subs[topic] {
		if emit == nil {
			continue
		}
		c, err := msg.Clone()
		if err != nil {
			return err
		}
		emit(c)
	}
	return nil
}

func (s *blobService) Close() error { return nil }

func fillPattern(p []byte, seed byte) {
	for i := range p {
		p[i] = byte(i*7) ^ seed
	}
}

func checksum(p []byte) uint64 {
	var h uint64 = 14695981039346656037
	for _, b := range p {
		h = (h ^ uint64(b)) * 1099511628211
	}
	return h
}

// tamper tries every way a receiver could change a blob's bytes through its
// descriptor, and reports the outcomes.
func tamper(b *blob.Blob) string {
	if b == nil || b.File() == nil {
		return "no descriptor"
	}
	f := b.File()
	var out []string
	if _, err := f.WriteAt([]byte("x"), 0); err != nil {
		out = append(out, "write refused")
	}
	if err := f.Truncate(1); err != nil {
		out = append(out, "shrink refused")
	}
	if err := f.Truncate(int64(b.Len()) + 4096); err != nil {
		out = append(out, "grow refused")
	}
	if _, err := unix.Mmap(int(f.Fd()), 0, b.Len(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		out = append(out, "writable mapping refused")
	}
	return fmt.Sprint(out)
}

const allRefused = "[write refused shrink refused grow refused writable mapping refused]"

func (tc *testCluster) joinBlob(mod func(*cluster.Config)) *cluster.Client {
	return tc.join(func(c *cluster.Config) {
		c.NewService = newBlobService
		if mod != nil {
			mod(c)
		}
	})
}

func newBlob(t *testing.T, size int, seed byte) *blob.Blob {
	t.Helper()
	b, err := blob.Create(size, func(p []byte) error { fillPattern(p, seed); return nil })
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

func TestBlobsTravelEveryWayOnEveryTransport(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tc *testCluster) {
		l := tc.joinBlob(nil)
		f := tc.joinBlob(nil)
		require.Equal(t, cluster.RoleFollower, f.Role().Role)
		ctx := context.Background()
		const size = 1 << 20
		in := newBlob(t, size, 3)
		want := make([]byte, size)
		fillPattern(want, 3)

		for _, c := range []*cluster.Client{l, f} {
			// Request and response both carry the blob.
			out, err := c.Invoke(ctx, "echo", cluster.Message{Data: []byte("meta"), Blob: in})
			require.NoError(t, err)
			require.Equal(t, "meta", string(out.Data))
			require.NotNil(t, out.Blob)
			require.True(t, bytes.Equal(want, out.Blob.Bytes()), "echoed blob differs")
			// A Follower on a Unix socket got a descriptor; over TCP the bytes came inline.
			passed := c == l || (tc.transport == "unix" && runtime.GOOS == "linux")
			require.Equal(t, passed, out.Blob.File() != nil)
			require.NoError(t, out.Close())
			require.Nil(t, out.Blob.Bytes(), "Close unmaps the blob")

			// The Leader's Service saw exactly what was sent.
			out, err = c.Invoke(ctx, "sum", cluster.Message{Blob: in})
			require.NoError(t, err)
			require.Equal(t, fmt.Sprintf("%d:%d", size, checksum(want)), string(out.Data))

			// A response blob made by the Leader.
			out, err = c.Invoke(ctx, "make", cluster.Message{Data: []byte("4096")})
			require.NoError(t, err)
			exp := make([]byte, 4096)
			fillPattern(exp, byte(4096%256))
			require.Equal(t, exp, out.Blob.Bytes())
			require.NoError(t, out.Close())
		}
		// The sender's blob is untouched and still its own.
		require.True(t, bytes.Equal(want, in.Bytes()))

		// Publish from a Follower; subscribers in both processes get the blob.
		got := make(chan string, 4)
		for _, c := range []*cluster.Client{l, f} {
			sub, err := c.Subscribe(ctx, "frames", func(m cluster.Message) {
				got <- fmt.Sprintf("%s %d:%d", m.Data, m.Blob.Len(), checksum(m.Blob.Bytes()))
			})
			require.NoError(t, err)
			defer sub.Close()
		}
		require.NoError(t, f.Publish(ctx, "frames", cluster.Message{Data: []byte("frame-1"), Blob: in}))
		exp := fmt.Sprintf("frame-1 %d:%d", size, checksum(want))
		require.Equal(t, exp, recv(t, got))
		require.Equal(t, exp, recv(t, got))
	})
}

func TestInlineBlobsMustFitMaxBody(t *testing.T) {
	tc := tcpCluster(t)
	tc.joinBlob(func(c *cluster.Config) { c.MaxBody = 64 << 10 })
	f := tc.joinBlob(func(c *cluster.Config) { c.MaxBody = 64 << 10 })
	big := newBlob(t, 128<<10, 1)
	_, err := f.Invoke(context.Background(), "sum", cluster.Message{Blob: big})
	require.ErrorIs(t, err, cluster.ErrTooLarge)
	require.ErrorContains(t, err, "inline")
	require.ErrorContains(t, err, "MaxBody")
	// Data alone is unaffected, and a blob that fits goes through.
	out, err := f.Invoke(context.Background(), "sum", cluster.Message{Blob: newBlob(t, 32<<10, 1)})
	require.NoError(t, err)
	require.Contains(t, string(out.Data), strconv.Itoa(32<<10)+":")
}

// Inline blobs travel as the tail of a frame's body, copied straight into the
// connection's queue (and large frames through write buffers shared by every
// connection): concurrent calls, answers and fan-out must each get their own bytes.
func TestInlineBlobsKeepTheirBytesUnderConcurrency(t *testing.T) {
	tc := tcpCluster(t)
	tc.joinBlob(nil)
	f := tc.joinBlob(nil)
	require.Equal(t, cluster.RoleFollower, f.Role().Role)
	ctx := context.Background()
	got := make(chan string, 1024)
	// The Follower subscribes: the Leader's deliveries to it travel inline too.
	sub, err := f.Subscribe(ctx, "frames", func(m cluster.Message) {
		got <- fmt.Sprintf("%s %d:%d", m.Data, m.Blob.Len(), checksum(m.Blob.Bytes()))
	})
	require.NoError(t, err)
	defer sub.Close()

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				seed := byte(g*20 + i)
				size := 32<<10 + int(seed)*1021
				in, err := blob.Create(size, func(p []byte) error { fillPattern(p, seed); return nil })
				if err != nil {
					errs <- err
					return
				}
				want := make([]byte, size)
				fillPattern(want, seed)
				out, err := f.Invoke(ctx, "echo", cluster.Message{Data: []byte{seed}, Blob: in})
				if err == nil && (len(out.Data) != 1 || out.Data[0] != seed || !bytes.Equal(want, out.Blob.Bytes())) {
					err = fmt.Errorf("call %d of goroutine %d: the echoed blob differs from what was sent", i, g)
				}
				if err == nil {
					err = f.Publish(ctx, "frames", cluster.Message{Data: []byte(strconv.Itoa(int(seed))), Blob: in})
				}
				_ = out.Close()
				_ = in.Close()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	seen := map[string]bool{}
	for range 8 * 20 {
		seen[recv(t, got)] = true
	}
	for seed := range 8 * 20 {
		size := 32<<10 + seed*1021
		want := make([]byte, size)
		fillPattern(want, byte(seed))
		require.True(t, seen[fmt.Sprintf("%d %d:%d", seed, size, checksum(want))], "message %d arrived changed", seed)
	}
}

func requireLinuxUnix(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("descriptors pass only on Linux")
	}
}

func TestLeaderFansOutOneBlobWithoutCopying(t *testing.T) {
	requireLinuxUnix(t)
	tc := newTestCluster(t)
	tc.joinBlob(nil)
	pub := tc.joinBlob(nil)
	ctx := context.Background()
	type seen struct {
		ino  uint64
		data uint64
	}
	got := make(chan seen, 8)
	for range 3 {
		c := tc.joinBlob(nil)
		sub, err := c.Subscribe(ctx, "snap", func(m cluster.Message) {
			var st unix.Stat_t
			if err := unix.Fstat(int(m.Blob.File().Fd()), &st); err != nil {
				t.Error(err)
			}
			got <- seen{st.Ino, checksum(m.Blob.Bytes())}
		})
		require.NoError(t, err)
		defer sub.Close()
	}
	in := newBlob(t, 4<<20, 9)
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(int(in.File().Fd()), &st))
	require.NoError(t, pub.Publish(ctx, "snap", cluster.Message{Blob: in}))
	for range 3 {
		// Every subscriber maps the very memory file the publisher wrote: no copy on the
		// way in, none in the Service's emit, none in the fan-out.
		s := <-got
		require.Equal(t, st.Ino, s.ino)
		require.Equal(t, checksum(in.Bytes()), s.data)
	}
}

func TestReceiversCannotModifyABlob(t *testing.T) {
	requireLinuxUnix(t)
	tc := newTestCluster(t)
	tc.joinBlob(nil)
	f := tc.joinBlob(nil)
	ctx := context.Background()
	// The Leader, receiving a Follower's blob.
	out, err := f.Invoke(ctx, "tamper", cluster.Message{Blob: newBlob(t, 8192, 5)})
	require.NoError(t, err)
	require.Equal(t, allRefused, string(out.Data))
	// A Follower, receiving the Leader's blob.
	out, err = f.Invoke(ctx, "make", cluster.Message{Data: []byte("8192")})
	require.NoError(t, err)
	defer out.Close()
	require.Equal(t, allRefused, tamper(out.Blob))
	exp := make([]byte, 8192)
	fillPattern(exp, byte(8192%256))
	require.Equal(t, exp, out.Blob.Bytes())
}

func TestFilesPassToTheLeaderAndBack(t *testing.T) {
	requireLinuxUnix(t)
	tc := newTestCluster(t)
	l := tc.joinBlob(nil)
	f := tc.joinBlob(nil)
	ctx := context.Background()
	for _, c := range []*cluster.Client{l, f} {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		// The Leader writes into our pipe.
		_, err = c.Invoke(ctx, "write", cluster.Message{Data: []byte("from the leader"), Files: []*os.File{w}})
		require.NoError(t, err)
		// A file comes back in a response, still the same pipe.
		out, err := c.Invoke(ctx, "echo", cluster.Message{Files: []*os.File{w}})
		require.NoError(t, err)
		require.Len(t, out.Files, 1)
		_, err = out.Files[0].Write([]byte(", and back"))
		require.NoError(t, err)
		require.NoError(t, out.Close())
		// Our write end is still ours: the library duplicated what it passed.
		_, err = w.Write([]byte("."))
		require.NoError(t, err)
		require.NoError(t, w.Close())
		// EOF proves every copy of the write end is closed: the Leader closed the files
		// it was lent once its Service returned.
		require.NoError(t, r.SetReadDeadline(time.Now().Add(waitTimeout)))
		all, err := io.ReadAll(r)
		require.NoError(t, err)
		require.Equal(t, "from the leader, and back.", string(all))
		r.Close()
	}
}

func TestFilesAreRefusedOverTCP(t *testing.T) {
	tc := tcpCluster(t)
	l := tc.joinBlob(nil)
	f := tc.joinBlob(nil)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	for _, c := range []*cluster.Client{l, f} {
		_, err := c.Invoke(context.Background(), "write", cluster.Message{Data: []byte("x"), Files: []*os.File{w}})
		require.ErrorIs(t, err, cluster.ErrFDUnsupported)
		require.ErrorContains(t, err, "the TCP transport")
		require.ErrorIs(t, c.Publish(context.Background(), "t", cluster.Message{Files: []*os.File{w}}), cluster.ErrFDUnsupported)
	}
}

func TestBlobLimitsAndRefusals(t *testing.T) {
	requireLinuxUnix(t)
	tc := newTestCluster(t)
	tc.joinBlob(func(c *cluster.Config) { c.MaxBlob = 64 << 10 })
	f := tc.joinBlob(func(c *cluster.Config) { c.MaxBlob = 16 << 10 })
	ctx := context.Background()
	// Past the Leader's MaxBlob: refused, named.
	_, err := f.Invoke(ctx, "sum", cluster.Message{Blob: newBlob(t, 128<<10, 1)})
	require.ErrorIs(t, err, cluster.ErrTooLarge)
	require.ErrorContains(t, err, "MaxBlob")
	// Past the Follower's own MaxBlob: the response is refused.
	_, err = f.Invoke(ctx, "make", cluster.Message{Data: []byte(strconv.Itoa(32 << 10))})
	require.ErrorIs(t, err, cluster.ErrTooLarge)
	// Both ends keep serving.
	out, err := f.Invoke(ctx, "sum", cluster.Message{Blob: newBlob(t, 8<<10, 1)})
	require.NoError(t, err)
	require.Contains(t, string(out.Data), "8192:")
	// A closed blob, too many files, a registration with a blob: refused before sending.
	closed := newBlob(t, 10, 1)
	require.NoError(t, closed.Close())
	_, err = f.Invoke(ctx, "sum", cluster.Message{Blob: closed})
	require.ErrorIs(t, err, os.ErrClosed)
	files := make([]*os.File, 17)
	for i := range files {
		files[i] = os.Stdin
	}
	_, err = f.Invoke(ctx, "echo", cluster.Message{Files: files})
	require.ErrorIs(t, err, cluster.ErrTooLarge)
	_, err = f.Register(ctx, "reg", cluster.Message{Blob: newBlob(t, 10, 1)})
	require.ErrorIs(t, err, errors.ErrUnsupported)
}

func TestBlobsAndFilesLeakNoDescriptors(t *testing.T) {
	requireLinuxUnix(t)
	tc := newTestCluster(t)
	ctx := context.Background()
	in := newBlob(t, 64<<10, 2)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	// With the collector off, no finalizer or cleanup can close what leaked.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := fdtest.Take(t)
	func() {
		l := tc.joinBlob(nil)
		f := tc.joinBlob(nil)
		defer l.Close()
		defer f.Close()
		var delivered sync.WaitGroup
		var subs []*cluster.Subscription
		for _, c := range []*cluster.Client{l, f} {
			sub, err := c.Subscribe(ctx, "t", func(m cluster.Message) {
				if m.Blob != nil && m.Blob.Len() == in.Len() {
					delivered.Done()
				}
			})
			require.NoError(t, err)
			subs = append(subs, sub)
		}
		for i := range 20 {
			out, err := f.Invoke(ctx, "echo", cluster.Message{Blob: in, Files: []*os.File{w}})
			require.NoError(t, err)
			require.NoError(t, out.Close())
			_, err = f.Invoke(ctx, "write", cluster.Message{Data: []byte("x"), Files: []*os.File{w}})
			require.NoError(t, err)
			require.NoError(t, f.InvokeOneway(ctx, "sum", cluster.Message{Blob: in}))
			require.NoError(t, l.InvokeOneway(ctx, "sum", cluster.Message{Blob: in}))
			delivered.Add(2)
			require.NoError(t, f.Publish(ctx, "t", cluster.Message{Data: []byte(strconv.Itoa(i)), Blob: in}))
		}
		delivered.Wait()
		for _, s := range subs {
			require.NoError(t, s.Close())
		}
	}()
	// Every blob, file and connection the cluster opened is closed again, by Close and
	// by the holders' releases, not by finalizers.
	before.RequireNoneAdded(t)
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	require.Equal(t, 20, n)
}

// A peer that floods requests and never reads the responses costs the Leader bounded
// memory: the responses queue up to ipc's bound (64 MiB), then the peer is dropped, and
// everyone else is served as before.
func TestAPeerThatNeverReadsIsDroppedNotBuffered(t *testing.T) {
	tc := newTestCluster(t)
	var logs syncBuffer
	leader := tc.joinBlob(func(c *cluster.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	healthy := tc.joinBlob(nil)

	c := tc.rawConn()
	_, err := c.Write(hello(tc.name))
	require.NoError(t, err)
	req := frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 1}, []byte("echo"), make([]byte, 32<<10))
	const total = 256 << 20 // four times the queue bound
	written := 0
	require.NoError(t, c.SetWriteDeadline(time.Now().Add(waitTimeout)))
	for written < total {
		binary.BigEndian.PutUint64(req[4:12], uint64(written/len(req)+1)) // a fresh request id
		n, err := c.Write(req)
		written += n
		if err != nil {
			require.NotErrorIs(t, err, os.ErrDeadlineExceeded, "the leader neither read nor dropped the flooding peer")
			break
		}
	}
	require.Less(t, written, total, "the leader absorbed %d bytes of requests whose responses nobody read", written)
	// Counted, and logged (just after it is counted).
	require.Eventually(t, func() bool {
		return leader.Stats().Refused["MaxQueued"] == 1 && strings.Contains(logs.String(), "peer is not reading: outbound queue full")
	}, waitTimeout, time.Millisecond, logs.String())

	out, err := healthy.Invoke(context.Background(), "echo", cluster.Message{Data: []byte("still served")})
	require.NoError(t, err)
	require.Equal(t, "still served", string(out.Data))
}

package ipc

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster/frame"
	"github.com/cluster-client-go/cluster/internal/fdtest"
)

// received is a frame and the files that came with it, as a FileHandler got them.
type received struct {
	f     frame.Frame
	files []*os.File
}

// collector is a FileHandler that hands every frame to a channel.
func collector(ch chan<- received) func(*Conn, frame.Frame, []*os.File) {
	return func(_ *Conn, f frame.Frame, files []*os.File) { ch <- received{f, files} }
}

func unixConns(t *testing.T, client, server Options) (*Conn, *Conn) {
	t.Helper()
	a, b := unixSocketPair(t)
	if server.Handler == nil && server.FileHandler == nil {
		server.Handler = echoHandler
	}
	cc, sc := started(NewConn(a, PeerCred{}, client)), started(NewConn(b, PeerCred{}, server))
	t.Cleanup(func() { cc.Close(); sc.Close() })
	return cc, sc
}

func TestPassAPipeBothWays(t *testing.T) {
	for _, m := range readerModes {
		t.Run(m.name, func(t *testing.T) {
			readDone := make(chan struct{}, 1)
			server := Options{FileHandler: func(c *Conn, f frame.Frame, files []*os.File) {
				switch string(f.Meta) {
				case "read": // answer with what the passed pipe holds; reading may block, so not here
					go func() {
						defer func() { readDone <- struct{}{} }()
						if len(files) != 1 {
							t.Errorf("got %d files, want 1", len(files))
							closeFiles(files)
							return
						}
						b, err := io.ReadAll(files[0])
						files[0].Close()
						if err != nil {
							t.Error(err)
						}
						_ = c.Reply(f.ID, b)
					}()
				case "give": // answer with a pipe of our own
					r := pipeWith(t, "from the server")
					require.NoError(t, c.SendParts(frame.Header{Kind: frame.KindResponse, ID: f.ID}, nil, []byte("here"), nil, []*os.File{r}))
					require.NoError(t, r.Close()) // the Conn holds its own duplicate
				}
			}}
			c, _ := unixConns(t, m.opts, server)
			require.True(t, c.CanPassFiles())
			before := fdtest.Take(t)

			r := pipeWith(t, "hello through a pipe")
			resp, files, err := c.Call(context.Background(), Request{Header: frame.Header{Kind: frame.KindInvoke}, Meta: []byte("read"), Files: []*os.File{r}})
			require.NoError(t, r.Close())
			require.NoError(t, err)
			require.Nil(t, files)
			require.Equal(t, "hello through a pipe", string(resp.Body))
			<-readDone

			f, files, err := c.Call(context.Background(), Request{Header: frame.Header{Kind: frame.KindInvoke}, Meta: []byte("give")})
			require.NoError(t, err)
			require.Equal(t, "here", string(f.Body))
			require.Equal(t, uint8(1), f.FDs)
			require.Len(t, files, 1)
			require.Equal(t, "from the server", readAllClose(t, files[0]))
			before.RequireNoneAdded(t)
		})
	}
}

func TestSendFilesMayCloseAtOnce(t *testing.T) {
	ch := make(chan received, 1)
	c, _ := unixConns(t, Options{}, Options{FileHandler: collector(ch)})
	r := pipeWith(t, "still readable")
	require.NoError(t, c.SendParts(frame.Header{Kind: frame.KindOneway, ID: 1}, []byte("m"), nil, nil, []*os.File{r}))
	require.NoError(t, r.Close()) // before the writer has necessarily written it
	got := <-ch
	require.Len(t, got.files, 1)
	require.Equal(t, "still readable", readAllClose(t, got.files[0]))
}

func TestFilesInterleavedWithPlainFramesInOrder(t *testing.T) {
	ch := make(chan received, 1024)
	c, _ := unixConns(t, Options{}, Options{FileHandler: collector(ch)})
	before := fdtest.Take(t)
	const frames = 300
	nfiles := func(i int) int {
		if i%3 != 0 {
			return 0
		}
		return 1 + i%frame.MaxFDs
	}
	body := func(i int) []byte {
		if i%50 == 7 { // some larger than the reader's buffer and than a socket buffer
			return bytes.Repeat([]byte{byte(i)}, 3*readBufferSize+i)
		}
		return []byte(fmt.Sprint(i))
	}
	go func() {
		for i := range frames {
			var files []*os.File
			for j := range nfiles(i) {
				files = append(files, pipeWith(t, fmt.Sprintf("%d.%d", i, j)))
			}
			err := c.SendParts(frame.Header{Kind: frame.KindMessage}, []byte("t"), body(i), nil, files)
			closeFiles(files)
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range frames {
		got := <-ch
		require.Equal(t, body(i), got.f.Body, "frame %d out of order or corrupt", i)
		require.Equal(t, nfiles(i), int(got.f.FDs))
		require.Len(t, got.files, nfiles(i))
		for j, f := range got.files {
			require.Equal(t, fmt.Sprintf("%d.%d", i, j), readAllClose(t, f))
		}
	}
	before.RequireNoneAdded(t)
}

func TestSixteenFilesAndAShortSendmsg(t *testing.T) {
	ch := make(chan received, 1)
	c, _ := unixConns(t, Options{}, Options{FileHandler: collector(ch)})
	var files []*os.File
	for i := range frame.MaxFDs {
		files = append(files, pipeWith(t, fmt.Sprint("file ", i)))
	}
	// 4 MiB cannot fit in a socket buffer: the sendmsg with the descriptors is short
	// and the rest of the frame follows in plain writes.
	body := bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16)
	require.NoError(t, c.SendParts(frame.Header{Kind: frame.KindMessage}, []byte("t"), body, nil, files))
	closeFiles(files)
	got := <-ch
	require.Equal(t, body, got.f.Body)
	require.Len(t, got.files, frame.MaxFDs)
	for i, f := range got.files {
		require.Equal(t, fmt.Sprint("file ", i), readAllClose(t, f))
	}
}

func TestTooManyFilesRefusedAtSend(t *testing.T) {
	c, _ := unixConns(t, Options{}, Options{})
	before := fdtest.Take(t)
	var files []*os.File
	for range frame.MaxFDs + 1 {
		files = append(files, pipeWith(t, ""))
	}
	err := c.SendParts(frame.Header{Kind: frame.KindMessage}, nil, nil, nil, files)
	require.ErrorIs(t, err, ErrTooManyFiles)
	_, _, err = c.Call(context.Background(), Request{Header: frame.Header{Kind: frame.KindInvoke}, Files: files})
	require.ErrorIs(t, err, ErrTooManyFiles)
	require.ErrorIs(t, err, ErrNotSent)
	require.ErrorIs(t, c.SendParts(frame.Header{Kind: frame.KindResponse, ID: 1}, nil, nil, nil, files), ErrTooManyFiles)
	closeFiles(files)
	require.Empty(t, before.Added(t))
	// A closed file is refused too, and nothing is half-sent.
	open, closed := pipeWith(t, ""), pipeWith(t, "")
	closed.Close()
	require.ErrorIs(t, c.SendParts(frame.Header{Kind: frame.KindMessage}, nil, nil, nil, []*os.File{open, closed}), os.ErrClosed)
	open.Close()
	require.Empty(t, before.Added(t), "the duplicate of the first file was closed")
	require.NoError(t, c.Err())
	f, err := invoke(context.Background(), c, []byte("m"), nil)
	require.NoError(t, err, "the Conn still works")
	require.Equal(t, "m", string(f.Body))
}

func TestFilesOverTCPAreUnsupported(t *testing.T) {
	c, _ := pair(t, Options{}, Options{})
	require.False(t, c.CanPassFiles())
	r := pipeWith(t, "")
	defer r.Close()
	err := c.SendParts(frame.Header{Kind: frame.KindOneway, ID: 1}, nil, nil, nil, []*os.File{r})
	require.ErrorIs(t, err, ErrFDUnsupported)
	require.ErrorContains(t, err, "tcp connection")
	_, _, err = c.Call(context.Background(), Request{Header: frame.Header{Kind: frame.KindInvoke}, Meta: []byte("m"), Files: []*os.File{r}})
	require.ErrorIs(t, err, ErrFDUnsupported)
	require.ErrorIs(t, err, ErrNotSent)
	// Without files the calls work.
	f, files, err := c.Call(context.Background(), Request{Header: frame.Header{Kind: frame.KindInvoke}, Meta: []byte("m")})
	require.NoError(t, err)
	require.Nil(t, files)
	require.Equal(t, "m", string(f.Body))
}

func TestResponseFilesToAnAbandonedCallAreClosed(t *testing.T) {
	for _, m := range readerModes {
		t.Run(m.name, func(t *testing.T) {
			arrived, release, replied := make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
			server := Options{FileHandler: func(c *Conn, f frame.Frame, _ []*os.File) {
				if string(f.Meta) != "late" {
					_ = c.Reply(f.ID, nil)
					return
				}
				arrived <- struct{}{}
				go func() {
					defer close(replied)
					<-release
					r := pipeWith(t, "too late")
					_ = c.SendParts(frame.Header{Kind: frame.KindResponse, ID: f.ID}, nil, nil, nil, []*os.File{r})
					r.Close()
				}()
			}}
			c, _ := unixConns(t, m.opts, server)
			before := fdtest.Take(t)
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() {
				_, _, err := c.Call(ctx, Request{Header: frame.Header{Kind: frame.KindInvoke}, Meta: []byte("late")})
				errc <- err
			}()
			<-arrived
			cancel()
			require.ErrorIs(t, <-errc, context.Canceled)
			close(release)
			<-replied
			// Answers arrive in order: once this one is back, the late one was handled.
			_, err := invoke(context.Background(), c, []byte("m"), nil)
			require.NoError(t, err)
			before.RequireNoneAdded(t)
		})
	}
}

// rawVictim is a Conn over one end of a socketpair whose other end the test drives with
// raw sendmsg calls, as a hostile peer would.
type rawVictim struct {
	c    *Conn
	peer int // the hostile end
	got  chan received
}

func newRawVictim(t *testing.T, fileHandler bool, mode Options) *rawVictim {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fds[0]), "victim")
	nc, err := net.FileConn(f)
	require.NoError(t, err)
	v := &rawVictim{peer: fds[1], got: make(chan received, 16)}
	f.Close()
	opts := mode
	opts.Heartbeat, opts.Handler = -1, func(*Conn, frame.Frame) {}
	if fileHandler {
		opts.FileHandler = collector(v.got)
	}
	v.c = started(NewConn(nc, PeerCred{}, opts))
	return v
}

// send writes b with the descriptors of files (none if empty) in one sendmsg.
func (v *rawVictim) send(t *testing.T, b []byte, files ...*os.File) {
	t.Helper()
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	n, err := unix.SendmsgN(v.peer, b, oob, nil, 0)
	require.NoError(t, err)
	require.Equal(t, len(b), n)
}

// waitConsumed waits until the Conn has read everything sent so far.
func (v *rawVictim) waitConsumed(t *testing.T) {
	t.Helper()
	waitDrained(t, v.c.nc)
}

func (v *rawVictim) close() {
	v.c.Close()
	unix.Close(v.peer)
}

func header(kind frame.Kind, id uint64, fds uint8, meta, body string) []byte {
	return frame.AppendFrame(nil, frame.Header{Kind: kind, ID: id, FDs: fds}, []byte(meta), []byte(body))
}

func TestHostilePeerDescriptors(t *testing.T) {
	for _, tt := range []struct {
		name        string
		noHandler   bool // Handler only, no FileHandler
		send        func(t *testing.T, v *rawVictim, pipes []*os.File)
		wantMessage string
	}{
		{"descriptors with a frame that declares none", false, func(t *testing.T, v *rawVictim, p []*os.File) {
			v.send(t, header(frame.KindMessage, 0, 0, "t", "x"), p[0])
		}, "declares none"},
		{"declares two, passes one", false, func(t *testing.T, v *rawVictim, p []*os.File) {
			v.send(t, header(frame.KindMessage, 0, 2, "t", "x"), p[0])
		}, "declares 2 file descriptors, but 1 arrived"},
		{"declares one, passes none", false, func(t *testing.T, v *rawVictim, p []*os.File) {
			v.send(t, header(frame.KindMessage, 0, 1, "t", "x"))
		}, "none arrived"},
		{"bad header with descriptors", false, func(t *testing.T, v *rawVictim, p []*os.File) {
			b := header(frame.KindMessage, 0, 2, "t", "x")
			b[0] = 9 // version
			v.send(t, b, p[0], p[1])
		}, "version"},
		{"more descriptors than a frame may pass", false, func(t *testing.T, v *rawVictim, p []*os.File) {
			v.send(t, header(frame.KindMessage, 0, frame.MaxFDs, "t", "x"), p[:frame.MaxFDs+1]...)
		}, "MSG_CTRUNC"},
		{"descriptors inside a frame's body", false, func(t *testing.T, v *rawVictim, p []*os.File) {
			b := header(frame.KindMessage, 0, 0, "t", "0123456789")
			v.send(t, b[:frame.HeaderSize+3])
			v.waitConsumed(t) // the Conn has seen the frame start without descriptors
			v.send(t, b[frame.HeaderSize+3:], p[0])
		}, "inside the bytes"},
		{"descriptors after a frame's first byte, before the next frame", false, func(t *testing.T, v *rawVictim, p []*os.File) {
			b := header(frame.KindMessage, 0, 0, "t", "0123456789")
			v.send(t, b[:5])
			v.waitConsumed(t)
			v.send(t, b[5:], p[0]) // a batch inside the header: no frame starts in it
			// A frame that must not inherit them. The Conn may have given up already and
			// closed its end (EPIPE): no error to check.
			_, _ = unix.SendmsgN(v.peer, header(frame.KindMessage, 0, 0, "t", "next"), nil, nil, unix.MSG_NOSIGNAL)
		}, "inside the bytes"},
		{"descriptors on a ping", false, func(t *testing.T, v *rawVictim, p []*os.File) {
			v.send(t, header(frame.KindPing, 1, 1, "", ""), p[0])
		}, "only responses and requests"},
		{"descriptors for a Conn without a FileHandler", true, func(t *testing.T, v *rawVictim, p []*os.File) {
			v.send(t, header(frame.KindMessage, 0, 1, "t", "x"), p[0])
		}, "does not accept descriptors"},
		{"torn connection after the descriptors arrived", false, func(t *testing.T, v *rawVictim, p []*os.File) {
			b := header(frame.KindMessage, 0, 3, "t", "a body that never ends")
			v.send(t, b[:frame.HeaderSize+5], p[0], p[1], p[2])
			v.waitConsumed(t)
			unix.Shutdown(v.peer, unix.SHUT_WR)
		}, "ended inside a message frame"},
		{"torn connection inside a header after descriptors", false, func(t *testing.T, v *rawVictim, p []*os.File) {
			v.send(t, header(frame.KindMessage, 0, 1, "t", "x")[:10], p[0])
			v.waitConsumed(t)
			unix.Shutdown(v.peer, unix.SHUT_WR)
		}, "inside a frame header"},
	} {
		for _, m := range readerModes {
			t.Run(m.name+"/"+tt.name, func(t *testing.T) {
				before := fdtest.Take(t)
				v := newRawVictim(t, !tt.noHandler, m.opts)
				var pipes []*os.File
				for range frame.MaxFDs + 1 {
					pipes = append(pipes, pipeWith(t, "x"))
				}
				tt.send(t, v, pipes)
				closeFiles(pipes)
				select {
				case <-v.c.Done():
				case got := <-v.got:
					closeFiles(got.files)
					t.Fatalf("a hostile frame was delivered: %v with %d files", got.f.Header, len(got.files))
				case <-time.After(10 * time.Second):
					t.Fatal("the Conn survived a hostile peer")
				}
				require.ErrorIs(t, v.c.Err(), frame.ErrProtocol)
				require.ErrorContains(t, v.c.Err(), tt.wantMessage)
				v.close()
				before.RequireNoneAdded(t)
			})
		}
	}
}

func TestAWellBehavedRawPeerIsUnderstood(t *testing.T) {
	// The rule the hostile tests probe, from the good side: descriptors come with the
	// first byte of their frame, possibly after plain frames in the same read, and a
	// frame may be split across sendmsgs.
	before := fdtest.Take(t)
	v := newRawVictim(t, true, Options{})
	ab := []*os.File{pipeWith(t, "a"), pipeWith(t, "b")}
	c := pipeWith(t, "c")
	f5 := header(frame.KindMessage, 0, 0, "t", "5")
	v.send(t, append(header(frame.KindMessage, 0, 0, "t", "1"), header(frame.KindMessage, 0, 0, "t", "2")...))
	v.send(t, header(frame.KindMessage, 0, 2, "t", "3"), ab...)
	v.send(t, append(header(frame.KindMessage, 0, 0, "t", "4"), f5[:10]...))
	v.waitConsumed(t)
	v.send(t, f5[10:])
	v.send(t, header(frame.KindMessage, 0, 1, "t", "6"), c)
	closeFiles(append(ab, c))
	want := [][]string{nil, nil, {"a", "b"}, nil, nil, {"c"}}
	for i, files := range want {
		got := <-v.got
		require.Equal(t, fmt.Sprint(i+1), string(got.f.Body))
		require.Len(t, got.files, len(files))
		for j, f := range got.files {
			require.Equal(t, files[j], readAllClose(t, f))
		}
	}
	require.NoError(t, v.c.Err())
	v.close()
	before.RequireNoneAdded(t)
}

func TestQueuedFilesAreClosedWhenTheConnEndsUnwritten(t *testing.T) {
	before := fdtest.Take(t)
	a, b := unixSocketPair(t) // b never reads
	c := started(NewConn(a, PeerCred{}, Options{Heartbeat: -1}))
	// Park the writer on a frame far larger than the socket buffer.
	require.NoError(t, c.Send(frame.Header{Kind: frame.KindMessage}, []byte("t"), make([]byte, 8<<20)))
	for range 4 {
		files := []*os.File{pipeWith(t, "x"), pipeWith(t, "y")}
		require.NoError(t, c.SendParts(frame.Header{Kind: frame.KindMessage}, []byte("t"), nil, nil, files))
		closeFiles(files)
	}
	// The Conn holds its duplicates: 8, on top of the two sockets.
	require.Len(t, before.Added(t), 2+8)
	require.NoError(t, c.Close())
	require.NoError(t, b.Close())
	before.RequireNoneAdded(t)
}

func TestCallHeaderCarriesFlags(t *testing.T) {
	ch := make(chan received, 1)
	c, _ := unixConns(t, Options{}, Options{FileHandler: func(c *Conn, f frame.Frame, files []*os.File) {
		ch <- received{f, files}
		_ = c.SendParts(frame.Header{Kind: frame.KindResponse, ID: f.ID, Flags: frame.FlagBlob}, nil, nil, nil, files)
		closeFiles(files)
	}})
	r := pipeWith(t, "blob")
	f, files, err := c.Call(context.Background(), Request{Header: frame.Header{Kind: frame.KindInvoke, Flags: frame.FlagBlob, Timeout: 7}, Meta: []byte("m"), Files: []*os.File{r}})
	r.Close()
	require.NoError(t, err)
	got := <-ch
	require.Equal(t, frame.FlagBlob, got.f.Flags)
	require.Equal(t, uint32(7), got.f.Timeout)
	require.Equal(t, frame.FlagBlob, f.Flags)
	require.Len(t, files, 1)
	require.Equal(t, "blob", readAllClose(t, files[0]))
}

// TestDescriptorsOfAFrameACallerLeftHalfReadAreDelivered: descriptors arrive with the
// first byte of their frame; a caller that reads that byte and gives up before the rest
// of the frame has come leaves them with the frame, for whoever reads next.
func TestDescriptorsOfAFrameACallerLeftHalfReadAreDelivered(t *testing.T) {
	a, b := unixSocketPair(t)
	got := make(chan received, 1)
	c := lendingClient(t, a, time.Hour, Options{FileHandler: collector(got)})
	peer := rawPeer{t, b}
	go func() { peer.answer(peer.request()) }()
	_, err := invoke(context.Background(), c, nil, nil)
	require.NoError(t, err)
	requireLend(t, c, lendFree)
	before := fdtest.Take(t)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := invoke(ctx, c, nil, nil)
		errc <- err
	}()
	second := peer.request()
	requireLend(t, c, lendCaller)
	body := bytes.Repeat([]byte("x"), 20000)
	push := frame.AppendFrame(nil, frame.Header{Kind: frame.KindMessage, FDs: 1}, []byte("t"), body)
	r := pipeWith(t, "passed with a cut frame")
	_, _, err = b.WriteMsgUnix(push[:100], unix.UnixRights(int(r.Fd())), nil)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	waitDrained(t, a)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)

	peer.write(push[100:])
	peer.answer(second)
	select {
	case m := <-got:
		require.Equal(t, body, m.f.Body)
		require.Len(t, m.files, 1)
		require.Equal(t, "passed with a cut frame", readAllClose(t, m.files[0]))
	case <-c.Done():
		t.Fatalf("the Conn failed: %v", c.Err())
	}
	before.RequireNoneAdded(t)
}

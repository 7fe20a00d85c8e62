package ipc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/frame"
)

// echoHandler answers every request with its own meta+body, or an error frame for
// meta "fail"; it never answers meta "hang".
func echoHandler(c *Conn, f frame.Frame) {
	switch string(f.Meta) {
	case "hang":
	case "fail":
		_ = c.ReplyError(f.ID, frame.CodeRemote, "failed: "+string(f.Body))
	default:
		_ = c.Reply(f.ID, append(append([]byte(nil), f.Meta...), f.Body...))
	}
}

// pair returns two connected Conns over a real socket pair: the client has no handler.
func pair(t *testing.T, client, server Options) (*Conn, *Conn) {
	t.Helper()
	a, b := socketPair(t)
	if server.Handler == nil {
		server.Handler = echoHandler
	}
	cc, sc := started(NewConn(a, PeerCred{}, client)), started(NewConn(b, PeerCred{}, server))
	t.Cleanup(func() { cc.Close(); sc.Close() })
	return cc, sc
}

// transport makes a connected pair of net.Conns.
type transport struct {
	name string
	pair func(testing.TB) (net.Conn, net.Conn)
}

func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	r := <-ch
	require.NoError(t, r.err)
	t.Cleanup(func() { r.c.Close() })
	return a, r.c
}

func TestCallRoundTripsConcurrently(t *testing.T) {
	for _, tr := range transports() {
		for _, m := range readerModes {
			t.Run(tr.name+"/"+m.name, func(t *testing.T) { testCallRoundTripsConcurrently(t, tr, m.opts) })
		}
	}
}

func testCallRoundTripsConcurrently(t *testing.T, tr transport, client Options) {
	a, b := tr.pair(t)
	c := started(NewConn(a, PeerCred{}, client))
	s := started(NewConn(b, PeerCred{}, Options{Handler: echoHandler}))
	t.Cleanup(func() { c.Close(); s.Close() })
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				// Mostly small bodies, coalesced by the writer; every 16th crosses the
				// reader's 64 KiB buffer and is read straight into place.
				n := i * j
				if j%16 == 15 {
					n = readBufferSize + i*j*7
				}
				body := []byte(strings.Repeat("x", n))
				f, err := invoke(context.Background(), c, []byte("m"), body)
				if !assertNoErr(t, err) {
					return
				}
				if string(f.Body) != "m"+string(body) {
					t.Errorf("got %q", f.Body)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Frames over maxReusedWriteBuffer are written from buffers shared by every Conn of the
// process: concurrent large calls and answers, on two Conns at once, must each keep
// their own bytes.
func TestLargeFramesKeepTheirBytesThroughRecycledBuffers(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			var wg sync.WaitGroup
			for range 2 {
				a, b := tr.pair(t)
				c := started(NewConn(a, PeerCred{}, Options{}))
				s := started(NewConn(b, PeerCred{}, Options{Handler: echoHandler}))
				t.Cleanup(func() { c.Close(); s.Close() })
				for g := range 3 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := range 4 {
							seed := byte(g*16 + i)
							body := make([]byte, maxReusedWriteBuffer+int(seed)*4099)
							for k := range body {
								body[k] = seed + byte(k*7)
							}
							f, err := invoke(context.Background(), c, []byte{seed}, body)
							if !assertNoErr(t, err) {
								return
							}
							if len(f.Body) != 1+len(body) || f.Body[0] != seed || !bytes.Equal(f.Body[1:], body) {
								t.Errorf("call %d of goroutine %d: the answer differs from what was sent", i, g)
								return
							}
						}
					}()
				}
			}
			wg.Wait()
		})
	}
}

// A body in two parts arrives as one, whether called or sent.
func TestPartsArriveAsOneBody(t *testing.T) {
	got := make(chan string, 1)
	c, _ := pair(t, Options{}, Options{Handler: func(s *Conn, f frame.Frame) {
		if f.Kind == frame.KindOneway {
			got <- string(f.Body)
			return
		}
		echoHandler(s, f)
	}})
	f, _, err := c.Call(context.Background(), Request{Header: frame.Header{Kind: frame.KindInvoke}, Meta: []byte("m"), Body: []byte("head-"), Tail: []byte("tail")})
	require.NoError(t, err)
	require.Equal(t, "mhead-tail", string(f.Body))
	f, _, err = c.Call(context.Background(), Request{Header: frame.Header{Kind: frame.KindInvoke}, Meta: []byte("m"), Tail: []byte("tail only")})
	require.NoError(t, err)
	require.Equal(t, "mtail only", string(f.Body))
	require.NoError(t, c.SendParts(frame.Header{Kind: frame.KindOneway}, []byte("m"), []byte("one"), []byte("way"), nil))
	require.Equal(t, "oneway", <-got)
}

// invoke calls an invoke request without files, whose answer must pass none.
func invoke(ctx context.Context, c *Conn, meta, body []byte) (frame.Frame, error) {
	f, files, err := c.Call(ctx, Request{Header: frame.Header{Kind: frame.KindInvoke}, Meta: meta, Body: body})
	if len(files) > 0 {
		closeFiles(files)
		return frame.Frame{}, fmt.Errorf("the answer passes %d files", len(files))
	}
	return f, err
}

func assertNoErr(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestErrorFrameIsAFrameError(t *testing.T) {
	c, _ := pair(t, Options{}, Options{})
	_, err := invoke(context.Background(), c, []byte("fail"), []byte("why"))
	var fe *FrameError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, frame.CodeRemote, fe.Code)
	require.Equal(t, "failed: why", fe.Message)
}

func TestPendingCallsFailWithTheCauseWhenTheConnEnds(t *testing.T) {
	for _, m := range readerModes {
		t.Run(m.name, func(t *testing.T) {
			arrived := make(chan struct{}, 8)
			c, s := pair(t, m.opts, Options{Handler: func(c *Conn, f frame.Frame) {
				arrived <- struct{}{}
				echoHandler(c, f)
			}})
			errs := make(chan error, cap(arrived))
			for range cap(errs) {
				go func() {
					_, err := invoke(context.Background(), c, []byte("hang"), nil)
					errs <- err
				}()
			}
			// Wait until the peer has every request: a call merely registered as pending may
			// still be unsent when the Conn ends, and then fails with ErrNotSent, rightly.
			for range cap(arrived) {
				<-arrived
			}
			s.Close()
			for range cap(errs) {
				err := <-errs
				require.ErrorIs(t, err, ErrConnLost)
				require.NotErrorIs(t, err, ErrNotSent, "these requests were sent: they may have run")
			}
			// After the end, a call is refused before sending.
			_, err := invoke(context.Background(), c, []byte("m"), nil)
			require.ErrorIs(t, err, ErrNotSent)
			require.ErrorIs(t, err, ErrConnLost)
			require.Error(t, c.Send(frame.Header{Kind: frame.KindOneway}, nil, nil))
		})
	}
}

// A call whose ctx ends returns at once; the answer the peer sends after that is
// dropped, and the next call on the Conn gets its own answer.
func TestCallHonoursContextAndDropsTheLateAnswer(t *testing.T) {
	for _, m := range readerModes {
		t.Run(m.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			held := make(chan uint64, 1) // the id of the request the peer holds
			c, s := pair(t, m.opts, Options{Handler: func(c *Conn, f frame.Frame) {
				if string(f.Meta) == "late" { // the caller gives up once its request arrived
					held <- f.ID
					cancel()
					return
				}
				echoHandler(c, f)
			}})
			_, err := invoke(ctx, c, []byte("late"), nil)
			require.ErrorIs(t, err, context.Canceled)
			c.pmu.Lock()
			pending := len(c.pending)
			c.pmu.Unlock()
			require.Zero(t, pending, "an abandoned call must not stay in the pending table")

			// The peer answers now. The next call's request reaches it after, so that
			// call's answer follows the late one on the stream.
			require.NoError(t, s.Reply(<-held, []byte("the late answer")))
			f, err := invoke(context.Background(), c, []byte("ok"), nil)
			require.NoError(t, err)
			require.Equal(t, "ok", string(f.Body), "the next call got the late answer")
			require.NoError(t, c.Err(), "a late answer is no protocol violation")
		})
	}
}

func TestPeerThatDoesNotReadIsDropped(t *testing.T) {
	// net.Pipe has no buffer: nothing the client queues is consumed.
	a, b := net.Pipe()
	defer b.Close()
	c := started(NewConn(a, PeerCred{}, Options{MaxQueue: 64 << 10, Heartbeat: -1}))
	defer c.Close()
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = c.Send(frame.Header{Kind: frame.KindMessage}, []byte("t"), make([]byte, 4096))
	}
	require.ErrorIs(t, err, ErrSlowConsumer)
	<-c.Done()
	require.ErrorIs(t, c.Err(), ErrSlowConsumer)
}

// A protocol violation fails the Conn: the peer reads an error frame saying why, then
// the end.
func TestProtocolViolationsCloseTheConn(t *testing.T) {
	for _, tt := range []struct {
		name  string
		bytes []byte
		want  error
		code  string
	}{
		{"wrong version", []byte{9, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, frame.ErrVersion, frame.CodeVersion},
		{"oversized body", func() []byte {
			b := make([]byte, frame.HeaderSize)
			(&frame.Header{Version: frame.Version, Kind: frame.KindInvoke, BodyLen: 1 << 30}).Put(b)
			return b
		}(), frame.ErrTooLarge, frame.CodeTooLarge},
		{"descriptors on a plain connection", func() []byte {
			b := frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 1, FDs: 1}, nil, nil)
			return b
		}(), frame.ErrProtocol, frame.CodeProtocol},
		{"hello after the handshake", frame.AppendFrame(nil, frame.Header{Kind: frame.KindHello}, nil, nil), frame.ErrProtocol, frame.CodeProtocol},
		{"answer to a request never sent", frame.AppendFrame(nil, frame.Header{Kind: frame.KindResponse, ID: 7}, nil, nil), frame.ErrProtocol, frame.CodeProtocol},
		{"truncated frame", frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 1}, []byte("method"), []byte("body"))[:30], frame.ErrProtocol, frame.CodeProtocol},
	} {
		for _, tr := range transports() {
			t.Run(tr.name+"/"+tt.name, func(t *testing.T) {
				a, b := tr.pair(t)
				c := started(NewConn(b, PeerCred{}, Options{Handler: echoHandler}))
				defer c.Close()
				_, err := a.Write(tt.bytes)
				require.NoError(t, err)
				if tt.name == "truncated frame" {
					require.NoError(t, a.(interface{ CloseWrite() error }).CloseWrite())
				}
				select {
				case <-c.Done():
				case <-time.After(10 * time.Second):
					t.Fatal("conn survived a protocol violation")
				}
				require.ErrorIs(t, c.Err(), tt.want)
				require.Equal(t, c.Err().Error(), requireFailFrame(t, a, tt.code), "the error frame says why")
				a.Close()
			})
		}
	}
}

func TestHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A silent peer is dropped after the timeout.
		a, b := net.Pipe()
		go func() { // read and discard, never answer
			buf := make([]byte, 1024)
			for {
				if _, err := b.Read(buf); err != nil {
					return
				}
			}
		}()
		c := started(NewConn(a, PeerCred{}, Options{Heartbeat: time.Second, HeartbeatTimeout: 3 * time.Second}))
		start := time.Now()
		<-c.Done()
		require.ErrorIs(t, c.Err(), ErrHeartbeatTimeout)
		require.GreaterOrEqual(t, time.Since(start), 3*time.Second)
		c.Close()
		b.Close()

		// Two live Conns keep each other alive through pings, however long they idle.
		x, y := net.Pipe()
		cx := started(NewConn(x, PeerCred{}, Options{Heartbeat: time.Second, HeartbeatTimeout: 3 * time.Second}))
		cy := started(NewConn(y, PeerCred{}, Options{Heartbeat: time.Second, HeartbeatTimeout: 3 * time.Second, Handler: echoHandler}))
		time.Sleep(time.Minute)
		require.NoError(t, cx.Err())
		require.NoError(t, cy.Err())
		f, err := invoke(context.Background(), cx, []byte("m"), nil)
		require.NoError(t, err)
		require.Equal(t, "m", string(f.Body))
		cx.Close()
		cy.Close()
	})
}

func TestDrainWritesWhatIsQueued(t *testing.T) {
	a, b := socketPair(t)
	c := started(NewConn(a, PeerCred{}, Options{}))
	for i := range 100 {
		require.NoError(t, c.Send(frame.Header{Kind: frame.KindMessage}, []byte("t"), []byte{byte(i)}))
	}
	require.NoError(t, c.Drain(context.Background()))
	for i := range 100 {
		f, err := frame.Read(b, frame.Limits{})
		require.NoError(t, err)
		require.Equal(t, []byte{byte(i)}, f.Body)
	}
	_, err := frame.Read(b, frame.Limits{})
	require.Error(t, err, "the Conn closed after its last frame")
	b.Close()
}

func started(c *Conn) *Conn {
	c.Start()
	return c
}

func TestCloseSendIsTheLastFrame(t *testing.T) {
	c, _ := pair(t, Options{}, Options{})
	require.NoError(t, c.CloseSend(frame.Header{Kind: frame.KindGoodbye}))
	require.ErrorIs(t, c.Send(frame.Header{Kind: frame.KindOneway}, nil, nil), ErrSendClosed)
	_, err := invoke(context.Background(), c, []byte("m"), nil)
	require.ErrorIs(t, err, ErrNotSent, "a request refused by CloseSend never left")
}

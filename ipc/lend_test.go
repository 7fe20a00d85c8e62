package ipc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/frame"
)

// readerModes are the two ways a calling Conn receives responses: the tests that make
// calls run in both.
var readerModes = []struct {
	name string
	opts Options
}{
	{"reader", Options{}},
	{"callerreads", Options{CallerReads: true}},
}

// lendingClient starts a CallerReads Conn on nc whose free role is reclaimed after
// reclaim (its reclaimAfter), with opts' handler for pushes.
func lendingClient(t *testing.T, nc net.Conn, reclaim time.Duration, opts Options) *Conn {
	t.Helper()
	opts.CallerReads, opts.Heartbeat = true, -1
	c := NewConn(nc, PeerCred{}, opts)
	c.reclaimAfter = reclaim
	c.Start()
	t.Cleanup(func() { c.Close() })
	return c
}

// requireLend waits until the role is held by want: the reader goroutine parks or the
// reclaim fires on its own time.
func requireLend(t *testing.T, c *Conn, want int32) {
	t.Helper()
	require.Eventually(t, func() bool { return c.lend.Load() == want }, 10*time.Second, 100*time.Microsecond,
		"role held by %d, want %d", c.lend.Load(), want)
}

func TestALoneCallReadsItsOwnResponse(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			a, b := tr.pair(t)
			arrived, release := make(chan uint64, 1), make(chan struct{})
			s := started(NewConn(b, PeerCred{}, Options{Handler: func(s *Conn, f frame.Frame) {
				if string(f.Meta) != "slow" {
					echoHandler(s, f)
					return
				}
				arrived <- f.ID
				go func() {
					<-release
					_ = s.Reply(f.ID, []byte("slow answer"))
				}()
			}}))
			t.Cleanup(func() { s.Close() })
			pushes := make(chan string, 4)
			c := lendingClient(t, a, time.Hour, Options{Handler: func(_ *Conn, f frame.Frame) { pushes <- string(f.Body) }})

			// The first call is answered through the reader goroutine, which then
			// leaves the role free: nothing else is pending.
			f, err := invoke(context.Background(), c, []byte("a"), nil)
			require.NoError(t, err)
			require.Equal(t, "a", string(f.Body))
			requireLend(t, c, lendFree)

			// The next one takes the role and waits on the socket itself.
			done := make(chan error, 1)
			go func() {
				f, err := invoke(context.Background(), c, []byte("slow"), nil)
				if err == nil && string(f.Body) != "slow answer" {
					err = fmt.Errorf("got %q", f.Body)
				}
				done <- err
			}()
			<-arrived
			requireLend(t, c, lendCaller)
			close(release)
			require.NoError(t, <-done)
			require.Equal(t, lendFree, c.lend.Load(), "a caller done with the role leaves it free for the next")

			// A push that arrives while nobody reads waits for the next reader:
			// here the next call, whose caller dispatches it on the way.
			require.NoError(t, s.Send(frame.Header{Kind: frame.KindMessage}, []byte("t"), []byte("pushed")))
			_, err = invoke(context.Background(), c, []byte("b"), nil)
			require.NoError(t, err)
			select {
			case got := <-pushes:
				require.Equal(t, "pushed", got)
			default:
				t.Fatal("the push sent before the call's answer was not dispatched by the time the call returned")
			}
		})
	}
}

// echoAndLender connects a lendingClient (reclaim and pushed as lendingClient takes
// them) to an echo server over tr, and returns both.
func echoAndLender(t *testing.T, tr transport, reclaim time.Duration, pushed func(*Conn, frame.Frame)) (c, s *Conn) {
	t.Helper()
	a, b := tr.pair(t)
	s = started(NewConn(b, PeerCred{}, Options{Handler: echoHandler}))
	t.Cleanup(func() { s.Close() })
	return lendingClient(t, a, reclaim, Options{Handler: pushed}), s
}

func TestAFreeRoleIsReclaimedForPushes(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			pushes := make(chan string, 4)
			c, s := echoAndLender(t, tr, time.Millisecond, func(_ *Conn, f frame.Frame) { pushes <- string(f.Body) })
			for range 3 {
				_, err := invoke(context.Background(), c, []byte("a"), nil)
				require.NoError(t, err)
			}
			// No call follows: the reclaim gives the role back to the reader
			// goroutine, which delivers pushes and notices the peer's end.
			requireLend(t, c, lendReader)
			require.NoError(t, s.Send(frame.Header{Kind: frame.KindMessage}, []byte("t"), []byte("later")))
			require.Equal(t, "later", <-pushes)
			s.Close()
			<-c.Done()
			require.ErrorIs(t, c.Err(), io.EOF)
		})
	}
}

// TestTheReclaimWaitsLongerWhileCallsKeepTheRoleBusy: a stream of calls, with nothing
// pushed, stretches the reclaim's period up to reclaimMax (fewer timer wake-ups); the
// role still goes back to the reader goroutine after the last call, and a push brings
// the period back to reclaimAfter.
func TestTheReclaimWaitsLongerWhileCallsKeepTheRoleBusy(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			periods := make(chan time.Duration, 4) // the period as each push is dispatched
			pushes := make(chan string, 4)
			c, s := echoAndLender(t, tr, reclaimAfter, func(c *Conn, f frame.Frame) {
				periods <- time.Duration(c.reclaimWait.Load())
				pushes <- string(f.Body)
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			stretch := func() {
				t.Helper()
				// A stall longer than the period (a loaded machine) ends the run and the
				// reclaim starts again at reclaimAfter: calls go on until a clean run.
				for c.reclaimWait.Load() < int64(reclaimMax) {
					require.NoError(t, ctx.Err(), "the reclaim's period stayed at %v", time.Duration(c.reclaimWait.Load()))
					_, err := invoke(ctx, c, []byte("a"), nil)
					require.NoError(t, err)
				}
			}

			stretch()
			// No call follows: the role still goes back to the reader goroutine, which
			// delivers a push.
			requireLend(t, c, lendReader)
			require.Equal(t, int64(reclaimAfter), c.reclaimWait.Load(), "a reclaim starts the period again")
			require.NoError(t, s.Send(frame.Header{Kind: frame.KindMessage}, []byte("t"), []byte("later")))
			require.Equal(t, "later", <-pushes)
			<-periods

			// A push read by a caller in the middle of a run brings the period back.
			stretch()
			require.NoError(t, s.Send(frame.Header{Kind: frame.KindMessage}, []byte("t"), []byte("between calls")))
			for len(pushes) == 0 {
				require.NoError(t, ctx.Err())
				_, err := invoke(ctx, c, []byte("a"), nil)
				require.NoError(t, err)
			}
			require.Equal(t, "between calls", <-pushes)
			require.Less(t, <-periods, reclaimMax, "a push brings the period back to reclaimAfter")
		})
	}
}

// TestAQuietPeersReclaimStretchesFurther: while the peer has sent nothing unasked, a
// run of calls stretches the reclaim's period past reclaimMax (up to reclaimQuietMax);
// once it has pushed, the period stays within reclaimMax, so later pushes are not held
// up that long.
func TestAQuietPeersReclaimStretchesFurther(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			pushes := make(chan string, 4)
			c, s := echoAndLender(t, tr, reclaimAfter, func(_ *Conn, f frame.Frame) { pushes <- string(f.Body) })
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			callUntil(t, ctx, c, func() bool { return c.reclaimWait.Load() > int64(reclaimMax) })
			require.LessOrEqual(t, c.reclaimWait.Load(), int64(reclaimQuietMax))

			require.NoError(t, s.Send(frame.Header{Kind: frame.KindMessage}, []byte("t"), []byte("now")))
			callUntil(t, ctx, c, func() bool { return len(pushes) > 0 })
			reclaimStaysWithinMax(t, ctx, c, "the peer has pushed")
		})
	}
}

// callUntil makes calls on c, one after another, until done reports true; the test
// fails if ctx ends first.
func callUntil(t *testing.T, ctx context.Context, c *Conn, done func() bool) {
	t.Helper()
	for !done() {
		require.NoError(t, ctx.Err(), "the reclaim's period stayed at %v", time.Duration(c.reclaimWait.Load()))
		_, err := invoke(ctx, c, []byte("a"), nil)
		require.NoError(t, err)
	}
}

// reclaimStaysWithinMax makes calls on c for several of the longest periods, in which
// the reclaim fires and doubles its period as often as it can, and checks after each
// that the period is within reclaimMax.
func reclaimStaysWithinMax(t *testing.T, ctx context.Context, c *Conn, why string) {
	t.Helper()
	for end := time.Now().Add(4 * reclaimQuietMax); time.Now().Before(end); {
		_, err := invoke(ctx, c, []byte("a"), nil)
		require.NoError(t, err)
		require.LessOrEqual(t, c.reclaimWait.Load(), int64(reclaimMax), why)
	}
}

// TestRestBrieflyKeepsTheReclaimShort: after RestBriefly, a run of calls on a Conn whose
// peer never sends unasked stretches the reclaim's period to reclaimMax, no further.
func TestRestBrieflyKeepsTheReclaimShort(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, _ := echoAndLender(t, tr, reclaimAfter, func(*Conn, frame.Frame) {})
			c.RestBriefly()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			callUntil(t, ctx, c, func() bool { return c.reclaimWait.Load() >= int64(reclaimMax) })
			reclaimStaysWithinMax(t, ctx, c, "after RestBriefly")
		})
	}
}

// restingClient returns a CallerReads Conn whose free role is reclaimed only after an
// hour, its peer p driven by hand (b, its socket), and call, which makes one call and
// reports on done. One call has been made: answered through the reader goroutine, which
// then left the role free.
func restingClient(t *testing.T, tr transport) (c *Conn, p rawPeer, b net.Conn, call func(), done chan error) {
	t.Helper()
	a, b := tr.pair(t)
	p = rawPeer{t, b}
	c = lendingClient(t, a, time.Hour, Options{})
	done = make(chan error, 1)
	call = func() {
		_, err := invoke(context.Background(), c, []byte("m"), nil)
		done <- err
	}
	go call()
	p.answer(p.request())
	require.NoError(t, <-done)
	requireLend(t, c, lendFree)
	return c, p, b, call, done
}

// TestReadNowReadsThePeersEndWithoutACall: a role left free after a call is not read
// until the reclaim (an hour here) or ReadNow; ReadNow makes the reader goroutine read
// the peer's end at once. A caller holding the role when ReadNow comes hands it to the
// reader goroutine when done, instead of leaving it free.
func TestReadNowReadsThePeersEndWithoutACall(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, p, b, call, done := restingClient(t, tr)
			// The next call takes the free role and reads its own answer.
			go call()
			f := p.request()
			requireLend(t, c, lendCaller)
			c.ReadNow()
			require.Equal(t, lendCaller, c.lend.Load(), "a caller holds the role: ReadNow leaves it")
			p.answer(f)
			require.NoError(t, <-done)
			requireLend(t, c, lendReader) // the caller handed it on instead of leaving it free
			go call()
			p.answer(p.request())
			require.NoError(t, <-done)
			requireLend(t, c, lendFree) // the request was served once

			require.NoError(t, b.Close())
			select {
			case <-c.Done():
				t.Fatal("nobody reads a free role before its reclaim")
			case <-time.After(20 * time.Millisecond):
			}
			c.ReadNow()
			select {
			case <-c.Done():
			case <-time.After(time.Minute):
				t.Fatal("ReadNow did not read the peer's end")
			}
			require.ErrorIs(t, c.Err(), io.EOF)
		})
	}
}

// rawPeer is the far end of a Conn, driven by hand.
type rawPeer struct {
	t  *testing.T
	nc net.Conn
}

// request reads one frame sent by the Conn.
func (p rawPeer) request() frame.Frame {
	p.t.Helper()
	hb := make([]byte, frame.HeaderSize)
	_, err := io.ReadFull(p.nc, hb)
	require.NoError(p.t, err)
	h, err := frame.ParseHeader(hb, frame.Limits{})
	require.NoError(p.t, err)
	rest := make([]byte, int(h.MetaLen)+int(h.BodyLen))
	_, err = io.ReadFull(p.nc, rest)
	require.NoError(p.t, err)
	return frame.Frame{Header: h, Meta: rest[:h.MetaLen], Body: rest[h.MetaLen:]}
}

func (p rawPeer) write(b []byte) {
	p.t.Helper()
	_, err := p.nc.Write(b)
	require.NoError(p.t, err)
}

// answer answers the request f with its own body.
func (p rawPeer) answer(f frame.Frame) {
	p.t.Helper()
	p.write(frame.AppendFrame(nil, frame.Header{Kind: frame.KindResponse, ID: f.ID}, nil, f.Body))
}

func TestACallerReadingPartOfAFrameLeavesItWhole(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 3000)
	push := frame.AppendFrame(nil, frame.Header{Kind: frame.KindMessage}, []byte("topic"), body)
	cuts := []struct {
		name string
		at   int
	}{{"header", frame.HeaderSize / 2}, {"meta", frame.HeaderSize + 2}, {"body", len(push) / 2}}
	for _, tr := range transports() {
		for _, end := range []string{"deadline", "cancel"} {
			for _, cut := range cuts {
				t.Run(tr.name+"/"+end+"/"+cut.name, func(t *testing.T) {
					testACallerReadingPartOfAFrame(t, tr, end, push, cut.at)
				})
			}
		}
	}
}

// A frame over 64 KiB is staged (see framebuf.go): its staging buffers, Budget bytes
// and clock go on with the next holder of the reading role wherever a caller stops.
func TestACallerReadingPartOfAStagedFrameLeavesItWhole(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 300000)
	push := frame.AppendFrame(nil, frame.Header{Kind: frame.KindMessage}, []byte("topic"), body)
	size := len(push) - frame.HeaderSize
	first := stageSize(size, 0)
	second := stageSize(size, first)
	require.Less(t, second, size, "the frame is staged twice")
	cuts := []struct {
		name string
		at   int
	}{
		{"first staging buffer", first / 2},
		{"end of the first staging buffer", first},
		{"second staging buffer", (first + second) / 2},
		{"frame's own buffer", (second + size) / 2},
	}
	for _, tr := range transports() {
		for _, cut := range cuts {
			t.Run(tr.name+"/"+cut.name, func(t *testing.T) {
				testACallerReadingPartOfAFrame(t, tr, "deadline", push, frame.HeaderSize+cut.at)
			})
		}
	}
}

// testACallerReadingPartOfAFrame: a caller reads push[:cut], then its call ends (by
// end); the rest of push comes later and must arrive whole, and what it held while
// incomplete is let go.
func testACallerReadingPartOfAFrame(t *testing.T, tr transport, end string, push []byte, cut int) {
	a, b := tr.pair(t)
	peer := rawPeer{t, b}
	pushes := make(chan []byte, 4)
	budget := NewBudget(4 << 20)
	c := lendingClient(t, a, time.Hour, Options{Budget: budget, FrameTimeout: time.Hour, Handler: func(_ *Conn, f frame.Frame) { pushes <- f.Body }})

	go func() { peer.answer(peer.request()) }()
	_, err := invoke(context.Background(), c, nil, []byte("first"))
	require.NoError(t, err)
	requireLend(t, c, lendFree)

	// The second call reads; the peer sends part of a push and stops.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var deadline time.Time
	if end == "deadline" {
		deadline = time.Now().Add(300 * time.Millisecond)
	}
	body := push[frame.HeaderSize+len("topic"):]
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Call(ctx, Request{Header: frame.Header{Kind: frame.KindInvoke}, Body: []byte("second"), Deadline: deadline})
		errc <- err
	}()
	second := peer.request()
	requireLend(t, c, lendCaller)
	peer.write(push[:cut])
	waitDrained(t, a) // the caller has read part of the frame
	if end == "cancel" {
		cancel()
		require.ErrorIs(t, <-errc, context.Canceled)
	} else {
		require.ErrorIs(t, <-errc, context.DeadlineExceeded)
	}

	// The rest arrives after the caller gave up: the frame is read
	// whole by whoever reads next, and the late answer is dropped.
	peer.write(push[cut:])
	peer.answer(second)
	select {
	case got := <-pushes:
		require.Equal(t, body, got)
	case <-c.Done():
		t.Fatalf("the Conn failed instead of reading the push whole: %v", c.Err())
	}
	go func() { peer.answer(peer.request()) }()
	f, err := invoke(context.Background(), c, nil, []byte("third"))
	require.NoError(t, err)
	require.Equal(t, "third", string(f.Body))
	require.NoError(t, c.Err())
	require.Zero(t, budget.InUse())
	sweep.mu.Lock()
	_, registered := sweep.frames[c]
	sweep.mu.Unlock()
	require.False(t, registered, "the frame's clock stopped")
}

func TestTheConnEndingUnderAReadingCaller(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			a, b := tr.pair(t)
			peer := rawPeer{t, b}
			c := lendingClient(t, a, time.Hour, Options{})
			go func() { peer.answer(peer.request()) }()
			_, err := invoke(context.Background(), c, nil, nil)
			require.NoError(t, err)
			requireLend(t, c, lendFree)

			errc := make(chan error, 1)
			go func() {
				_, err := invoke(context.Background(), c, nil, nil)
				errc <- err
			}()
			peer.request()
			requireLend(t, c, lendCaller)
			peer.write([]byte{frame.Version}) // a torn header, then the end
			require.NoError(t, b.Close())
			err = <-errc
			require.ErrorIs(t, err, ErrConnLost)
			require.ErrorIs(t, err, frame.ErrProtocol, "the cause is the torn frame, found by the reading caller")
			c.Wait() // the reader goroutine ended the Conn and exits
		})
	}
}

// TestCallerReadsUnderLoad mixes lone and concurrent calls, deadlines, cancellations,
// slow answers and pushes on one Conn: every call gets its own answer or its own
// error, every push arrives once, and nothing hangs.
func TestCallerReadsUnderLoad(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			a, b := tr.pair(t)
			s := started(NewConn(b, PeerCred{}, Options{Handler: func(s *Conn, f frame.Frame) {
				if bytes.HasPrefix(f.Meta, []byte("slow")) {
					go func() {
						time.Sleep(time.Duration(len(f.Meta)) * 100 * time.Microsecond)
						echoHandler(s, f)
					}()
					return
				}
				echoHandler(s, f)
			}}))
			t.Cleanup(func() { s.Close() })
			var pushed atomic.Int64
			c := lendingClient(t, a, reclaimAfter, Options{Handler: func(_ *Conn, f frame.Frame) { pushed.Add(1) }})

			const pushes = 500
			go func() {
				for i := range pushes {
					_ = s.Send(frame.Header{Kind: frame.KindMessage}, []byte("t"), []byte(fmt.Sprint(i)))
					if i%50 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			}()
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(g), 1))
					for i := range 300 {
						meta := "m"
						if rng.IntN(8) == 0 {
							meta = "slow" + string(bytes.Repeat([]byte("w"), rng.IntN(20)))
						}
						body := []byte(fmt.Sprintf("%d.%d", g, i))
						ctx, cancel := context.WithCancel(context.Background())
						var deadline time.Time
						switch rng.IntN(10) {
						case 0:
							deadline = time.Now().Add(time.Duration(rng.IntN(3000)) * time.Microsecond)
						case 1:
							after := time.Duration(rng.IntN(3000)) * time.Microsecond
							go func() {
								time.Sleep(after)
								cancel()
							}()
						}
						f, _, err := c.Call(ctx, Request{Header: frame.Header{Kind: frame.KindInvoke}, Meta: []byte(meta), Body: body, Deadline: deadline})
						cancel()
						switch {
						case err == nil:
							if want := meta + string(body); string(f.Body) != want {
								t.Errorf("call %s got %q", want, f.Body)
								return
							}
						case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
						default:
							t.Errorf("call %d.%d: %v", g, i, err)
							return
						}
						if i%32 == 0 {
							time.Sleep(time.Duration(rng.IntN(1000)) * time.Microsecond) // let the role be reclaimed
						}
					}
				}()
			}
			wg.Wait()
			require.Eventually(t, func() bool { return pushed.Load() == pushes }, 10*time.Second, time.Millisecond,
				"%d of %d pushes delivered", pushed.Load(), pushes)
			require.NoError(t, c.Err())
		})
	}
}

// A ReadNow that lands while a caller is leaving the role (after it looked for one, before
// the role is free) is not lost: the role goes to the reader goroutine, which reads the
// peer's end.
func TestReadNowWhileACallerLeavesTheRole(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, p, b, call, done := restingClient(t, tr)
			leaveHook = func(c *Conn) { leaveHook = nil; c.ReadNow() }
			defer func() { leaveHook = nil }()
			go call() // takes the role and reads its own answer
			f := p.request()
			requireLend(t, c, lendCaller)
			p.answer(f)
			require.NoError(t, <-done)

			require.NoError(t, b.Close())
			select {
			case <-c.Done():
			case <-time.After(time.Minute):
				t.Fatalf("the ReadNow was lost (role %d, flag %v): nobody reads the peer's end", c.lend.Load(), c.readNow.Load())
			}
		})
	}
}

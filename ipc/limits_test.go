package ipc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/frame"
)

// requireFailFrame reads what a failing Conn sends its peer nc last: an error frame with
// id 0 and code, then the end of the stream. It returns the frame's message.
func requireFailFrame(t *testing.T, nc net.Conn, code string) string {
	t.Helper()
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(10*time.Second)))
	var last frame.Frame
	for {
		f, err := frame.Read(nc, frame.Limits{})
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "the stream must end cleanly after the error frame")
		last = f
	}
	require.Equal(t, frame.KindError, last.Kind, "the last frame before the end")
	require.Equal(t, uint64(0), last.ID)
	require.Equal(t, code, string(last.Meta))
	return string(last.Body)
}

// largeHeader is the header of a message frame with meta "t" and a body of n bytes.
func largeHeader(n int) []byte {
	b := make([]byte, frame.HeaderSize)
	(&frame.Header{Version: frame.Version, Kind: frame.KindMessage, MetaLen: 1, BodyLen: uint32(n)}).Put(b)
	return append(b, 't')
}

// A peer that sends the header of a 16 MiB frame and part of its body makes the Conn
// hold a few times what it sent, not 16 MiB.
func TestAnIncompleteFrameHoldsWhatThePeerSent(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			a, b := tr.pair(t)
			budget := NewBudget(1 << 30)
			c := started(NewConn(b, PeerCred{}, Options{Budget: budget, Heartbeat: -1, Handler: func(*Conn, frame.Frame) {}}))
			defer c.Close()
			peer := rawPeer{t, a}
			peer.write(largeHeader(16 << 20))
			sent := 0
			for _, n := range []int{3 << 10, 200 << 10, 1 << 20} {
				peer.write(make([]byte, n))
				sent += n
				waitDrained(t, b)
				require.Eventually(t, func() bool { return budget.InUse() > 0 || sent < freeFrame }, 10*time.Second, time.Millisecond)
				require.LessOrEqual(t, budget.InUse(), int64(growth*sent), "after %d bytes of the body", sent)
			}
			require.NoError(t, c.Close())
			require.Zero(t, budget.InUse(), "the Conn's end releases what its incomplete frame held")
		})
	}
}

// A frame not complete within FrameTimeout fails its Conn: the peer reads an error
// frame with code limit, then the end.
func TestAFrameNotCompleteInTimeFailsTheConn(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			a, b := tr.pair(t)
			budget := NewBudget(1 << 30)
			c := started(NewConn(b, PeerCred{}, Options{Budget: budget, FrameTimeout: 50 * time.Millisecond, Heartbeat: -1, Handler: func(*Conn, frame.Frame) {}}))
			defer c.Close()
			rawPeer{t, a}.write(append(largeHeader(16<<20), make([]byte, 3<<10)...))
			msg := requireFailFrame(t, a, frame.CodeLimit)
			require.Contains(t, msg, "not complete")
			<-c.Done()
			require.ErrorIs(t, c.Err(), ErrFrameTimeout)
			c.Wait()
			require.Zero(t, budget.InUse())
			sweep.mu.Lock()
			_, registered := sweep.frames[c]
			sweep.mu.Unlock()
			require.False(t, registered, "the sweeper forgets the Conn")
		})
	}
}

// expireFrame makes the sweeper find c's frame past its time now.
func expireFrame(t *testing.T, c *Conn) {
	t.Helper()
	sweep.mu.Lock()
	f, ok := sweep.frames[c]
	f.deadline = monotonic()
	sweep.frames[c] = f
	sweep.mu.Unlock()
	require.True(t, ok, "the Conn has no frame whose clock runs")
	sweep.tick()
}

// waitingForBudget reports whether a reader waits for b.
func waitingForBudget(b *Budget) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.freed != nil
}

// stallBudget starts a Conn on budget (which must be free) whose peer sends the header of
// a frame that needs all of it, and then a quarter of the frame, and stalls: the frame's
// own buffer is made, and holds the whole Budget.
func stallBudget(t *testing.T, tr transport, budget *Budget) *Conn {
	t.Helper()
	a, b := tr.pair(t)
	c := started(NewConn(b, PeerCred{}, Options{Budget: budget, FrameTimeout: time.Hour, Heartbeat: -1, Handler: func(*Conn, frame.Frame) {}}))
	t.Cleanup(func() { c.Close() })
	size := int(budget.limit) + freeFrame
	rawPeer{t, a}.write(append(largeHeader(size-1), make([]byte, size/growth)...))
	require.Eventually(t, func() bool { return budget.InUse() == budget.limit }, 10*time.Second, time.Millisecond)
	return c
}

// A Conn whose frame needs more of the Budget than is left waits, without reading,
// until a stalled frame's Conn is dropped (FrameTimeout), and then reads it whole.
func TestAFrameWaitsForBudget(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			budget := NewBudget(1<<20 - freeFrame)
			stalled := stallBudget(t, tr, budget)

			got := make(chan frame.Frame, 1)
			a, b := tr.pair(t)
			sender := started(NewConn(a, PeerCred{}, Options{}))
			receiver := started(NewConn(b, PeerCred{}, Options{Budget: budget, Handler: func(_ *Conn, f frame.Frame) { got <- f }}))
			t.Cleanup(func() { sender.Close(); receiver.Close() })
			body := bytes.Repeat([]byte("0123456789abcdef"), (1<<20-1)/16)
			require.NoError(t, sender.Send(frame.Header{Kind: frame.KindMessage}, []byte("t"), body))

			require.Eventually(t, func() bool { return waitingForBudget(budget) }, 10*time.Second, time.Millisecond, "the receiver waits for budget")
			select {
			case <-got:
				t.Fatal("a frame needing more budget than is left was read")
			case <-time.After(50 * time.Millisecond):
			}

			expireFrame(t, stalled)
			select {
			case f := <-got:
				require.Equal(t, body, f.Body)
			case <-time.After(10 * time.Second):
				t.Fatal("the waiting frame was not read once the budget was released")
			}
			<-stalled.Done()
			require.ErrorIs(t, stalled.Err(), ErrFrameTimeout)
			require.NoError(t, receiver.Err())
			require.Eventually(t, func() bool { return budget.InUse() == 0 }, 10*time.Second, time.Millisecond)
		})
	}
}

// A Conn that waits for Budget ends when closed, and gives back what it held.
func TestAConnWaitingForBudgetCloses(t *testing.T) {
	budget := NewBudget(1<<20 - freeFrame)
	tr := transports()[0]
	stalled := stallBudget(t, tr, budget)
	a, b := tr.pair(t)
	waiting := started(NewConn(b, PeerCred{}, Options{Budget: budget, Heartbeat: -1, Handler: func(*Conn, frame.Frame) {}}))
	rawPeer{t, a}.write(append(largeHeader(1<<20-1), make([]byte, 256<<10)...))
	require.Eventually(t, func() bool { return waitingForBudget(budget) }, 10*time.Second, time.Millisecond)
	require.NoError(t, waiting.Close())
	require.ErrorIs(t, waiting.Err(), ErrClosed)
	require.Equal(t, budget.limit, budget.InUse(), "the stalled frame still holds all of it")
	require.NoError(t, stalled.Close())
	require.Zero(t, budget.InUse())
}

// A frame that could never fit in the Budget is too large.
func TestAFrameLargerThanTheBudgetIsTooLarge(t *testing.T) {
	a, b := socketPair(t)
	c := started(NewConn(b, PeerCred{}, Options{Budget: NewBudget(1 << 20), Handler: func(*Conn, frame.Frame) {}}))
	defer c.Close()
	rawPeer{t, a}.write(largeHeader(1<<20 + freeFrame))
	msg := requireFailFrame(t, a, frame.CodeTooLarge)
	require.Contains(t, msg, "budget")
	<-c.Done()
	require.ErrorIs(t, c.Err(), frame.ErrTooLarge)
}

// A caller that reads its own response and finds the Budget exhausted leaves reading to
// the reader goroutine, which reads the response once budget is released.
func TestACallerLeavesAResponseThatWaitsForBudget(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			budget := NewBudget(1<<20 - freeFrame)
			stalled := stallBudget(t, tr, budget)
			a, b := tr.pair(t)
			s := started(NewConn(b, PeerCred{}, Options{Handler: echoHandler}))
			t.Cleanup(func() { s.Close() })
			c := lendingClient(t, a, time.Hour, Options{Budget: budget})
			_, err := invoke(context.Background(), c, []byte("m"), nil)
			require.NoError(t, err)
			requireLend(t, c, lendFree)

			body := bytes.Repeat([]byte("x"), 512<<10)
			done := make(chan error, 1)
			go func() {
				f, err := invoke(context.Background(), c, []byte("m"), body)
				if err == nil && !bytes.Equal(f.Body, append([]byte("m"), body...)) {
					err = fmt.Errorf("the response differs from the request")
				}
				done <- err
			}()
			require.Eventually(t, func() bool { return waitingForBudget(budget) }, 10*time.Second, time.Millisecond)
			requireLend(t, c, lendReader)
			expireFrame(t, stalled)
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("the call was not answered once the budget was released")
			}
			require.Eventually(t, func() bool { return budget.InUse() == 0 }, 10*time.Second, time.Millisecond)
		})
	}
}

// Frames over 64 KiB are staged across many reads, in buffers that grow with what
// arrived, and arrive whole; a Budget gets all its bytes back.
func TestStagedFramesArriveWhole(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			budget := NewBudget(64 << 20)
			got := make(chan frame.Frame, 1)
			a, b := tr.pair(t)
			c := started(NewConn(b, PeerCred{}, Options{Budget: budget, FrameTimeout: time.Hour, Handler: func(_ *Conn, f frame.Frame) { got <- f }}))
			defer c.Close()
			peer := rawPeer{t, a}
			for _, size := range []int{freeFrame + 1, 100 << 10, 256<<10 + 1, 1<<20 + 5, 4<<20 + 3} {
				body := make([]byte, size-1)
				for i := range body {
					body[i] = byte(i * 7 / 3)
				}
				b := append(largeHeader(len(body)), body...)
				for len(b) > 0 { // in pieces of varied sizes, so reads end anywhere
					n := min(len(b), 1000+len(b)%150_000)
					peer.write(b[:n])
					b = b[n:]
				}
				f := <-got
				require.Equal(t, "t", string(f.Meta))
				require.True(t, bytes.Equal(body, f.Body), "the body of a frame of %d bytes arrived changed", size)
				require.Zero(t, budget.InUse())
			}
			sweep.mu.Lock()
			_, registered := sweep.frames[c]
			sweep.mu.Unlock()
			require.False(t, registered, "a complete frame's clock stops")
		})
	}
}

// A Handler that finds the peer breaking a rule fails the Conn: the peer reads one
// error frame, then the end, and frames read after Fail are not dispatched. Fail's
// goroutine and the reader both end the failing Conn, the reader either at its next
// frame (frames behind the failing one) or when its read is cut short (nothing
// behind): it ends once, cleanly, however they meet.
func TestFailFromAHandler(t *testing.T) {
	one := func(body string) []byte {
		return frame.AppendFrame(nil, frame.Header{Kind: frame.KindMessage}, []byte("t"), []byte(body))
	}
	for _, tr := range transports() {
		for _, behind := range []string{"", "after"} {
			t.Run(tr.name+"/behind="+behind, func(t *testing.T) {
				for range 10 {
					a, b := tr.pair(t)
					dispatched := make(chan string, 4)
					c := started(NewConn(b, PeerCred{}, Options{Handler: func(c *Conn, f frame.Frame) {
						dispatched <- string(f.Body)
						if string(f.Body) == "bad" {
							c.Fail(frame.CodeProtocol, fmt.Errorf("%w: a bad message", frame.ErrProtocol))
						}
					}}))
					sent := append(one("good"), one("bad")...)
					if behind != "" {
						sent = append(sent, one(behind)...)
					}
					rawPeer{t, a}.write(sent) // one read takes them all
					errs := errorFrames(t, a)
					require.Len(t, errs, 1, "one error frame, then the end")
					require.Equal(t, frame.CodeProtocol, string(errs[0].Meta))
					require.Contains(t, string(errs[0].Body), "a bad message")
					<-c.Done()
					require.ErrorIs(t, c.Err(), frame.ErrProtocol)
					require.ErrorContains(t, c.Err(), "a bad message")
					c.Wait()
					close(dispatched)
					var bodies []string
					for s := range dispatched {
						bodies = append(bodies, s)
					}
					require.Equal(t, []string{"good", "bad"}, bodies)
				}
			})
		}
	}
}

// errorFrames reads nc to its end, which must be clean, and returns the frames read,
// each of which must be an error frame.
func errorFrames(t *testing.T, nc net.Conn) []frame.Frame {
	t.Helper()
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(10*time.Second)))
	var got []frame.Frame
	for {
		f, err := frame.Read(nc, frame.Limits{})
		if errors.Is(err, io.EOF) {
			return got
		}
		require.NoError(t, err, "the stream must end cleanly after the error frame")
		require.Equal(t, frame.KindError, f.Kind)
		got = append(got, f)
	}
}

// The peer's Conn ends with the error it was sent.
func TestFailEndsThePeerWithTheFrameError(t *testing.T) {
	c, s := pair(t, Options{}, Options{Handler: func(c *Conn, f frame.Frame) {
		c.Fail(frame.CodeLimit, errors.New("too many subscriptions"))
	}})
	require.NoError(t, c.Send(frame.Header{Kind: frame.KindSubscribe}, []byte("t"), nil))
	<-c.Done()
	var fe *FrameError
	require.ErrorAs(t, c.Err(), &fe)
	require.Equal(t, &FrameError{Code: frame.CodeLimit, Message: "too many subscriptions"}, fe)
	<-s.Done()
	require.EqualError(t, s.Err(), "too many subscriptions")
}

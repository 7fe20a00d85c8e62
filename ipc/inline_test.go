package ipc

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/frame"
)

// inlineHandler answers every request inline; a request with meta "block" blocks
// inline until unblock is closed, so only a takeover lets the next frames in, and one
// with meta "hold" blocks too but is given an hour (no takeover). It passes back the
// files it is given, to show the descriptor-aware reader handed on intact.
type inlineHandler struct {
	blocking chan struct{} // told when a "block" or "hold" request starts blocking
	unblock  chan struct{} // closed to end "block" requests
	hold     chan struct{} // closed to end "hold" requests
	quick    chan bool     // what each Inline call reported
}

func (h *inlineHandler) handle(c *Conn, f frame.Frame, files []*os.File) {
	// Only the blocking request may be taken over: a quick one given an hour never is,
	// however slow the machine, so what Inline reports is certain either way.
	after := time.Hour
	if string(f.Meta) == "block" {
		after = time.Millisecond
	}
	quick := c.Inline(after, func() {
		switch string(f.Meta) {
		case "block":
			h.blocking <- struct{}{}
			<-h.unblock
		case "hold":
			h.blocking <- struct{}{}
			<-h.hold
		}
		_ = c.SendParts(frame.Header{Kind: frame.KindResponse, ID: f.ID}, nil, append([]byte(nil), f.Body...), nil, files)
		closeFiles(files)
	})
	h.quick <- quick
}

func TestInlineHandsReadingOnWhenAFunctionBlocks(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			h := &inlineHandler{blocking: make(chan struct{}, 1), unblock: make(chan struct{}), quick: make(chan bool, 100)}
			a, b := tr.pair(t)
			c := started(NewConn(a, PeerCred{}, Options{}))
			s := started(NewConn(b, PeerCred{}, Options{FileHandler: h.handle}))
			defer func() { c.Close(); s.Close() }()
			unblocked := false
			defer func() { // before the Closes, or s.Close waits for the blocked reader
				if !unblocked {
					close(h.unblock)
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// Quick requests are answered inline, and Inline says so.
			for i := range 3 {
				f, err := invoke(ctx, c, []byte("echo"), []byte{byte(i)})
				require.NoError(t, err)
				require.Equal(t, []byte{byte(i)}, f.Body)
				require.True(t, <-h.quick)
			}

			// A request that blocks inline: the next one is still read and answered
			// (by the goroutine that took over reading), while the first is not.
			blocked := make(chan error, 1)
			go func() {
				f, err := invoke(ctx, c, []byte("block"), []byte("first"))
				if err == nil && string(f.Body) != "first" {
					err = errBody(f.Body)
				}
				blocked <- err
			}()
			<-h.blocking
			var files []*os.File
			if c.CanPassFiles() {
				files = []*os.File{pipeWith(t, "after the takeover")}
			}
			f, got, err := c.Call(ctx, Request{Header: frame.Header{Kind: frame.KindInvoke}, Meta: []byte("echo"), Body: []byte("second"), Files: files})
			closeFiles(files)
			require.NoError(t, err, "a request behind a blocked inline one must be answered")
			require.Equal(t, "second", string(f.Body))
			if files != nil {
				require.Len(t, got, 1, "descriptors pass after the reading role moved")
				require.Equal(t, "after the takeover", readAllClose(t, got[0]))
			}
			require.True(t, <-h.quick, "the second request ran quickly on the new reader")
			select {
			case err := <-blocked:
				t.Fatalf("the blocked request returned early: %v", err)
			default:
			}
			close(h.unblock)
			unblocked = true
			require.NoError(t, <-blocked)
			require.False(t, <-h.quick, "Inline reports the takeover")

			// The connection goes on working, then closes cleanly (goleak checks the
			// goroutines in TestMain).
			for i := range 3 {
				f, err := invoke(ctx, c, []byte("echo"), []byte{byte(i)})
				require.NoError(t, err)
				require.Equal(t, []byte{byte(i)}, f.Body)
				<-h.quick
			}
		})
	}
}

type errBody []byte

func (b errBody) Error() string { return "unexpected body " + string(b) }

// TestInlineTakeoverWhileTheConnEnds: the peer goes away while a function blocks
// inline; the goroutine that took over reading sees the end, fails what is pending,
// and the blocked function still finishes and returns.
func TestInlineTakeoverWhileTheConnEnds(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) { testInlineTakeoverWhileTheConnEnds(t, tr) })
	}
}

func testInlineTakeoverWhileTheConnEnds(t *testing.T, tr transport) {
	unblock := make(chan struct{})
	var ran atomic.Bool
	returned := make(chan bool, 1)
	a, b := tr.pair(t)
	c := started(NewConn(a, PeerCred{}, Options{}))
	s := started(NewConn(b, PeerCred{}, Options{Handler: func(c *Conn, f frame.Frame) {
		returned <- c.Inline(time.Millisecond, func() {
			<-unblock
			ran.Store(true)
			_ = c.Reply(f.ID, nil)
		})
	}}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { _, _ = invoke(ctx, c, []byte("x"), nil) }()
	// Wait until the watch took over: the role's generation moved on, out of Inline.
	require.Eventually(t, func() bool {
		return s.role.Load()&1 == 0 && s.role.Load() > 0
	}, 30*time.Second, time.Millisecond, "the watch takes over reading")
	c.Close()
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("the server side did not see the end of the connection")
	}
	close(unblock)
	require.False(t, <-returned)
	require.True(t, ran.Load())
	s.Close() // waits for the reader that took over
}

// watchPeriod is the Inline watch's period now.
func watchPeriod() time.Duration {
	watch.mu.Lock()
	defer watch.mu.Unlock()
	return watch.period
}

// TestTheWatchTicksLessWhileInlineFunctionsAreQuick: while every Inline function
// returns before a tick finds it running, the watch's period stretches to
// inlineTickMax (fewer timer wake-ups); a function that then blocks is still taken
// over, and while one runs the period is back to inlineTick.
func TestTheWatchTicksLessWhileInlineFunctionsAreQuick(t *testing.T) {
	h := &inlineHandler{blocking: make(chan struct{}, 1), unblock: make(chan struct{}), hold: make(chan struct{}), quick: make(chan bool, 100)}
	a, b := socketPair(t)
	c := started(NewConn(a, PeerCred{}, Options{}))
	s := started(NewConn(b, PeerCred{}, Options{FileHandler: h.handle}))
	defer func() { c.Close(); s.Close() }()
	unblock, unhold := sync.OnceFunc(func() { close(h.unblock) }), sync.OnceFunc(func() { close(h.hold) })
	defer func() { unblock(); unhold() }() // before the Closes, which wait for the reader
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	call := func(meta, body string) {
		t.Helper()
		f, err := invoke(ctx, c, []byte(meta), []byte(body))
		require.NoError(t, err)
		require.Equal(t, body, string(f.Body))
	}

	// stretch sends quick requests until the period has stretched all the way. (A
	// stall longer than the period, on a loaded machine, lets the watch stop and start
	// again at inlineTick; the stream goes on until a clean stretch.)
	stretch := func() {
		t.Helper()
		for watchPeriod() < inlineTickMax {
			require.NoError(t, ctx.Err(), "the watch's period stayed at %v", watchPeriod())
			call("echo", "quick")
			require.True(t, <-h.quick)
		}
	}
	// inBackground makes a call on another goroutine and reports how it went.
	inBackground := func(meta, body string) <-chan error {
		errc := make(chan error, 1)
		go func() {
			f, err := invoke(ctx, c, []byte(meta), []byte(body))
			if err == nil && string(f.Body) != body {
				err = errBody(f.Body)
			}
			errc <- err
		}()
		return errc
	}

	// A function that blocks after a stretch is still taken over: the next request
	// is answered.
	stretch()
	blocked := inBackground("block", "first")
	<-h.blocking
	call("echo", "second")
	require.True(t, <-h.quick)
	unblock()
	require.NoError(t, <-blocked)
	require.False(t, <-h.quick, "Inline reports the takeover")

	// One that runs (an hour before any takeover) after a stretch: every tick finds
	// it running and keeps the period short.
	stretch()
	held := inBackground("hold", "held")
	<-h.blocking
	require.Eventually(t, func() bool { return watchPeriod() == inlineTick }, time.Minute, time.Millisecond,
		"the period stayed at %v while a function ran", watchPeriod())
	unhold()
	require.NoError(t, <-held)
	require.True(t, <-h.quick)
}

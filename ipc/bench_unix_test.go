//go:build !windows

package ipc

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/cluster-client-go/cluster/frame"
)

// benchRoundTrip measures one Call round trip (64-byte body, echoed) over a and b.
func benchRoundTrip(b *testing.B, a, z net.Conn) {
	cc := started(NewConn(a, PeerCred{}, Options{Heartbeat: -1}))
	sc := started(NewConn(z, PeerCred{}, Options{Heartbeat: -1, Handler: func(c *Conn, f frame.Frame) { _ = c.Reply(f.ID, f.Body) }}))
	defer sc.Close()
	defer cc.Close()
	body := make([]byte, 64)
	req := Request{Header: frame.Header{Kind: frame.KindInvoke}, Body: body}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(2 * (frame.HeaderSize + len(body))))
	for b.Loop() {
		if _, _, err := cc.Call(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripUnix is the fd-less Call round trip over a Unix socketpair.
func BenchmarkRoundTripUnix(b *testing.B) {
	a, z := unixSocketPair(b)
	benchRoundTrip(b, a, z)
}

// BenchmarkRoundTripTCP is the same round trip over loopback TCP.
func BenchmarkRoundTripTCP(b *testing.B) {
	a, z := socketPair(b)
	benchRoundTrip(b, a, z)
}

// BenchmarkRoundTripUnixParallel is many concurrent callers on one Conn: frames are
// coalesced by the writer and many arrive per read.
func BenchmarkRoundTripUnixParallel(b *testing.B) {
	a, z := unixSocketPair(b)
	cc := started(NewConn(a, PeerCred{}, Options{Heartbeat: -1}))
	sc := started(NewConn(z, PeerCred{}, Options{Heartbeat: -1, Handler: func(c *Conn, f frame.Frame) { _ = c.Reply(f.ID, f.Body) }}))
	defer sc.Close()
	defer cc.Close()
	body := make([]byte, 64)
	req := Request{Header: frame.Header{Kind: frame.KindInvoke}, Body: body}
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := cc.Call(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkLargeFrame is a Call whose request carries a large body (answered with an
// empty response): the receiving side's cost of a large frame, which its reader reads
// into a buffer that grows as the bytes arrive.
func BenchmarkLargeFrame(b *testing.B) {
	for _, tr := range []transport{
		{"unix", func(tb testing.TB) (net.Conn, net.Conn) { return unixSocketPair(tb) }},
		{"tcp", socketPair},
	} {
		for _, size := range []int{1 << 20, 16 << 20} {
			b.Run(fmt.Sprintf("%s/%dMiB", tr.name, size>>20), func(b *testing.B) {
				a, z := tr.pair(b)
				cc := started(NewConn(a, PeerCred{}, Options{Heartbeat: -1}))
				sc := started(NewConn(z, PeerCred{}, Options{Heartbeat: -1, Handler: func(c *Conn, f frame.Frame) { _ = c.Reply(f.ID, nil) }}))
				defer sc.Close()
				defer cc.Close()
				req := Request{Header: frame.Header{Kind: frame.KindInvoke}, Body: make([]byte, size)}
				ctx := context.Background()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := cc.Call(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

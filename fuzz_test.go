package cluster_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/frame"
)

// FuzzLeaderConn feeds arbitrary bytes, after a valid hello, to a live Leader's
// connection handler: whatever they are, the Leader must drop or serve that peer and go
// on serving a healthy Follower. A crash, a hang, or a Follower left unserved fails.
func FuzzLeaderConn(f *testing.F) {
	frames := func(fs ...[]byte) []byte {
		var b []byte
		for _, x := range fs {
			b = append(b, x...)
		}
		return b
	}
	invoke := frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 1}, []byte("greet"), []byte("fuzz"))
	sub := frame.AppendFrame(nil, frame.Header{Kind: frame.KindSubscribe, ID: 2}, []byte("t"), nil)
	shared := frame.AppendFrame(nil, frame.Header{Kind: frame.KindSubscribe, ID: 3}, []byte("t"), []byte{frame.SubscribeShared})
	pub := frame.AppendFrame(nil, frame.Header{Kind: frame.KindPublish, ID: 4}, []byte("t"), []byte("x"))
	reg := frame.AppendFrame(nil, frame.Header{Kind: frame.KindRegister, ID: 5}, []byte("r"), frame.AppendRegister(nil, 9, []byte("addr")))
	inline := frame.AppendFrame(nil, frame.Header{Kind: frame.KindInvoke, ID: 6, Flags: frame.FlagInlineBlob}, []byte("greet"), frame.AppendInlineBlob(nil, []byte("d"), []byte("blob")))
	f.Add([]byte{})
	f.Add(invoke)
	f.Add(frames(sub, shared, pub, invoke))
	f.Add(frames(reg, frame.AppendFrame(nil, frame.Header{Kind: frame.KindWithdraw, ID: 7}, []byte("r"), frame.AppendRegister(nil, 9, nil))))
	f.Add(inline)
	f.Add(frames(frame.AppendFrame(nil, frame.Header{Kind: frame.KindPing}, nil, nil), frame.AppendFrame(nil, frame.Header{Kind: frame.KindGoodbye}, nil, nil)))
	f.Add(invoke[:30])
	// A live Leader and a healthy Follower, shared by every input of this process.
	dir, err := os.MkdirTemp("", "")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	join := func() *cluster.Client {
		c, err := cluster.Join(context.Background(), cluster.Config{
			Name: "fuzz", Dir: dir, NewService: newBroker, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { c.Close() })
		return c
	}
	leader, follower := join(), join()
	sock := filepath.Join(dir, "fuzz.sock")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write(hello("fuzz"))
		_, _ = c.Write(data)
		_ = c.(*net.UnixConn).CloseWrite()
		// Read what the Leader says until it hangs up: it must, since we stopped talking.
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("the leader kept a connection whose peer hung up")
				}
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := follower.Invoke(ctx, "greet", cluster.Message{Data: []byte("healthy")})
		if err != nil || string(out.Data) != "hello, healthy" {
			t.Fatalf("the healthy follower is not served after the input: %q, %v", out.Data, err)
		}
		if r := leader.Role().Role; r != cluster.RoleLeader {
			t.Fatalf("the leader is now %s", r)
		}
	})
}

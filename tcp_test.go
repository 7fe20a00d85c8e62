package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/frame"
)

func tcpCluster(t *testing.T) *testCluster {
	tc := newTestCluster(t)
	tc.transport, tc.port = "tcp", freePort(t)
	return tc
}

func readToken(t *testing.T, tc *testCluster) (string, os.FileInfo) {
	t.Helper()
	path := filepath.Join(tc.dir, tc.name+".token")
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b), fi
}

func TestTCPFollowersMustPresentTheToken(t *testing.T) {
	tc := tcpCluster(t)
	var logs syncBuffer
	tc.join(func(c *cluster.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	healthy := tc.join(nil)
	require.Equal(t, cluster.TransportTCP, healthy.Stats().Transport)

	for _, tt := range []struct{ name, token, want string }{
		{"missing token", "", "no token"},
		{"wrong token", strings.Repeat("0", 64), "wrong token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tc.port))
			require.NoError(t, err)
			defer c.Close()
			h := frame.Hello{MinVersion: frame.Version, MaxVersion: frame.Version, PID: 1, MaxBody: 1 << 20, Name: tc.name, Token: []byte(tt.token)}
			require.NoError(t, frame.Write(c, frame.Header{Kind: frame.KindHello}, nil, h.Append(nil)))
			require.NoError(t, c.SetReadDeadline(time.Now().Add(waitTimeout)))
			f, err := frame.Read(c, frame.Limits{})
			require.NoError(t, err)
			require.Equal(t, frame.KindError, f.Kind)
			require.Equal(t, frame.CodeUnauthorized, string(f.Meta))
			require.Contains(t, string(f.Body), tt.want)
			require.Eventually(t, func() bool { return strings.Contains(logs.String(), tt.want) }, waitTimeout, time.Millisecond, "refusal not logged")
			out, err := healthy.Invoke(context.Background(), "echo", cluster.Message{Data: []byte("still served")})
			require.NoError(t, err)
			require.Equal(t, "still served", string(out.Data))
		})
	}
}

// A Follower can read the token file between a new Leader's bind and its writing the
// token: it is asked to retry, as while a Leader hands over, and not logged as refused.
func TestTCPPreviousTermsTokenIsAskedToRetry(t *testing.T) {
	tc := tcpCluster(t)
	first := tc.join(nil)
	var logs syncBuffer
	next := tc.join(func(c *cluster.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	old, _ := readToken(t, tc)
	_, oldToken, _ := strings.Cut(old, "token=")
	oldToken = strings.TrimSpace(oldToken)
	require.NoError(t, first.Close())
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := next.Invoke(ctx, "echo", cluster.Message{})
	require.NoError(t, err)
	require.Equal(t, uint64(2), next.Role().Term)

	hello := func(token string) frame.Frame {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tc.port))
		require.NoError(t, err)
		defer c.Close()
		h := frame.Hello{MinVersion: frame.Version, MaxVersion: frame.Version, PID: 1, MaxBody: 1 << 20, Name: tc.name, Token: []byte(token)}
		require.NoError(t, frame.Write(c, frame.Header{Kind: frame.KindHello}, nil, h.Append(nil)))
		require.NoError(t, c.SetReadDeadline(time.Now().Add(waitTimeout)))
		f, err := frame.Read(c, frame.Limits{})
		require.NoError(t, err)
		return f
	}
	f := hello(oldToken)
	require.Equal(t, frame.KindError, f.Kind)
	require.Equal(t, frame.CodeClosed, string(f.Meta), "the previous term's token is retryable")
	require.Contains(t, string(f.Body), "previous term")
	// Any other token is refused, and logged.
	f = hello(strings.Repeat("1", len(oldToken)))
	require.Equal(t, frame.CodeUnauthorized, string(f.Meta))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "wrong token") }, waitTimeout, time.Millisecond)
	require.NotContains(t, logs.String(), "previous term", "a stale token is not a warning")

	late := tc.join(nil)
	_, err = late.Invoke(ctx, "echo", cluster.Message{})
	require.NoError(t, err)
	require.Equal(t, cluster.RoleFollower, late.Role().Role)
}

func TestTCPTokenFileIsPrivateAndReplacedEachTerm(t *testing.T) {
	tc := tcpCluster(t)
	l := tc.join(nil)
	f := tc.join(nil)
	first, fi := readToken(t, tc)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.Contains(t, first, "term=1 ")
	require.Contains(t, first, fmt.Sprintf("pid=%d ", os.Getpid()))

	require.NoError(t, l.Close())
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := f.Invoke(ctx, "echo", cluster.Message{})
	require.NoError(t, err)
	require.Equal(t, cluster.RoleLeader, f.Role().Role)
	require.Equal(t, uint64(2), f.Role().Term)
	second, fi := readToken(t, tc)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.Contains(t, second, "term=2 ")
	tokenOf := func(s string) string { _, tok, _ := strings.Cut(s, "token="); return strings.TrimSpace(tok) }
	require.Len(t, tokenOf(second), 64)
	require.NotEqual(t, tokenOf(first), tokenOf(second), "the token must change with the term")
}

func TestTCPListensOnLoopbackOnly(t *testing.T) {
	tc := tcpCluster(t)
	c := tc.join(nil)
	st := c.Stats()
	host, _, err := net.SplitHostPort(strings.TrimSuffix(st.Address, " (tcp)"))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)
	// Nothing answers on the same port of the wildcard address's other interfaces.
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() || ipn.IP.To4() == nil {
				continue
			}
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(ipn.IP.String(), fmt.Sprint(tc.port)), time.Second)
			if err == nil {
				conn.Close()
				t.Fatalf("the leader answers on %s", ipn.IP)
			}
		}
	}
}

func TestTCPPortHeldByAnotherProgram(t *testing.T) {
	for _, tt := range []struct {
		name  string
		serve func(c net.Conn)
	}{
		// Like sshd: a banner, then it waits for ours.
		{"speaks another protocol", func(c net.Conn) {
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			io.Copy(io.Discard, c)
		}},
		// Accepts and hangs up at once.
		{"hangs up", func(c net.Conn) {}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tc := tcpCluster(t)
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", tc.port))
			require.NoError(t, err)
			var wg sync.WaitGroup
			defer wg.Wait()
			defer ln.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer c.Close()
						tt.serve(c)
					}()
				}
			}()
			cfg := cluster.Config{Name: tc.name, Dir: tc.dir, Transport: cluster.TransportTCP, Port: tc.port,
				NewService: newBroker, Logger: slog.New(slog.DiscardHandler)}
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			start := time.Now()
			c, err := cluster.Join(ctx, cfg)
			require.Nil(t, c)
			require.ErrorIs(t, err, cluster.ErrProtocol)
			require.Contains(t, err.Error(), fmt.Sprintf("127.0.0.1:%d", tc.port), "the error must name the port")
			require.Less(t, time.Since(start), waitTimeout/2, "Join must not wait out its context")
		})
	}
}

func TestTransportFromTheEnvironment(t *testing.T) {
	tc := newTestCluster(t)
	port := freePort(t)
	t.Setenv(cluster.TransportEnv, "tcp")
	c := tc.join(func(c *cluster.Config) { c.Port = port })
	st := c.Stats()
	require.Equal(t, cluster.TransportTCP, st.Transport)
	require.Contains(t, st.TransportReason, cluster.TransportEnv)
	require.Contains(t, st.Address, fmt.Sprint(port))

	t.Setenv(cluster.TransportEnv, "carrier-pigeon")
	_, err := cluster.Join(context.Background(), cluster.Config{Name: "x", Dir: tc.dir, NewService: newBroker})
	require.ErrorIs(t, err, cluster.ErrConfig)
	require.ErrorContains(t, err, cluster.TransportEnv)
}

func TestDefaultPortIsStableAndBelowTheEphemeralRange(t *testing.T) {
	require.Equal(t, cluster.DefaultPort("registry"), cluster.DefaultPort("registry"))
	require.NotEqual(t, cluster.DefaultPort("registry"), cluster.DefaultPort("config"))
	for _, n := range []string{"a", "registry", "config", strings.Repeat("z", 64)} {
		p := cluster.DefaultPort(n)
		require.GreaterOrEqual(t, p, 20000)
		require.Less(t, p, 30000)
	}
}

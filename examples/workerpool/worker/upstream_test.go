package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster"
	"github.com/cluster-client-go/cluster/internal/upstream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestUpstreamService checks the worker's client against the demo's upstream server.
func TestUpstreamService(t *testing.T) {
	srv, err := upstream.Start("127.0.0.1:0")
	require.NoError(t, err)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := dialUpstream(srv.Addr())(ctx)
	require.NoError(t, err)
	defer svc.Close()

	out, err := svc.Invoke(ctx, "echo", cluster.Message{Data: []byte("hi")})
	require.NoError(t, err)
	require.Equal(t, "hi", string(out.Data))
	_, err = svc.Invoke(ctx, "fail", cluster.Message{Data: []byte("x")})
	require.EqualError(t, err, "failed on purpose: x")

	got := make(chan string, 10)
	stop, err := svc.Subscribe(ctx, "config", func(m cluster.Message) { got <- string(m.Data) })
	require.NoError(t, err)
	require.Equal(t, 1, srv.Subscribers("config"))
	srv.Push("config", []byte("v1"))
	require.Equal(t, "v1", <-got)
	require.NoError(t, svc.Publish(ctx, "config", cluster.Message{Data: []byte("v2")}))
	require.Equal(t, "v2", <-got)
	stop()
	require.Eventually(t, func() bool { return srv.Subscribers("config") == 0 }, 10*time.Second, time.Millisecond)

	// A call in flight when the connection ends fails, and so do later ones.
	failed := make(chan error, 1)
	go func() {
		_, err := svc.Invoke(ctx, "sleep", cluster.Message{Data: []byte("1m")})
		failed <- err
	}()
	require.Eventually(t, func() bool { return srv.Inflight() == 1 }, 10*time.Second, time.Millisecond)
	require.NoError(t, svc.Close())
	require.Error(t, <-failed)
	_, err = svc.Invoke(ctx, "echo", cluster.Message{})
	require.Error(t, err)
}

package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// A filesystem without flock, or a kernel without Unix sockets, cannot be staged in a
// test; the decision that follows such an error is tested here on the real Client.
func TestAutoFallsBackToTCPWhenUnixIsUnavailable(t *testing.T) {
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	cfg, err := Config{Name: "fb", Dir: dir, Lead: LeadNever, Logger: slog.New(slog.DiscardHandler)}.validate()
	require.NoError(t, err)
	c := &Client{cfg: cfg}
	c.setTransport(cfg.transport, cfg.transportWhy)
	require.Equal(t, "unix", c.tr.kind())

	require.False(t, c.fallBack(fmt.Errorf("dial: %w", syscall.ECONNREFUSED)), "an ordinary error is no reason to switch")
	require.Equal(t, "unix", c.tr.kind())
	for _, cause := range []error{syscall.ENOLCK, syscall.EOPNOTSUPP, syscall.ENOSYS, syscall.EAFNOSUPPORT} {
		c.setTransport(TransportUnix, "default")
		require.True(t, c.fallBack(fmt.Errorf("taking the lock: %w", cause)), "%v", cause)
		require.Equal(t, "tcp", c.tr.kind())
		require.Contains(t, c.trk.Load().why, "unavailable")
	}

	// A transport the user forced is never switched behind their back.
	c.setTransport(TransportUnix, "Config.Transport")
	require.False(t, c.fallBack(syscall.ENOLCK))
	_ = context.Background
}

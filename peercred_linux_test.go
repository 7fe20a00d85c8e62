package cluster_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster"
)

// SO_PEERCRED, and running a peer as another uid, are Linux's.

func TestPeerCredentialsAdmitOnlyTheSameUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a peer as another uid (uid 65534)")
	}
	tc := newTestCluster(t)
	// Make the socket reachable by anyone at the filesystem level, so that the only
	// gate left is SO_PEERCRED.
	c := tc.join(func(c *cluster.Config) { c.SocketMode = 0o666 })
	require.NoError(t, os.Chmod(tc.dir, 0o711))
	sock := filepath.Join(tc.dir, tc.name+".sock")

	other := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out := runHello(t, sock, tc.name, other)
	require.True(t, strings.HasPrefix(out, "error unauthorized"), "uid 65534 was not refused: %q", out)
	require.Contains(t, out, "uid=65534")
	require.Contains(t, out, "AllowUIDs")

	// The same uid is welcome.
	require.True(t, strings.HasPrefix(runHello(t, sock, tc.name, nil), "welcome"))
	_ = c
}

func TestPeerCredentialsAllowList(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a peer as another uid (uid 65534)")
	}
	tc := newTestCluster(t)
	tc.join(func(c *cluster.Config) {
		c.SocketMode = 0o666
		c.AllowUIDs = []uint32{65534}
	})
	require.NoError(t, os.Chmod(tc.dir, 0o711))
	sock := filepath.Join(tc.dir, tc.name+".sock")
	out := runHello(t, sock, tc.name, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}})
	require.True(t, strings.HasPrefix(out, "welcome"), "an allowed uid was refused: %q", out)
}

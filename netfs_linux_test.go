//go:build linux

package cluster_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cluster-client-go/cluster"
)

// TestDirOnFUSEIsRefused mounts a real FUSE filesystem (bindfs, the userspace bind
// mount; Docker Desktop's file sharing is FUSE too) and checks that Join refuses a Dir on
// it, naming the filesystem.
func TestDirOnFUSEIsRefused(t *testing.T) {
	bindfs, err := exec.LookPath("bindfs")
	if err != nil {
		t.Skip("bindfs is not installed (apt-get install bindfs): no FUSE filesystem to mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	base, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	defer os.RemoveAll(base)
	src, mnt := filepath.Join(base, "src"), filepath.Join(base, "mnt")
	require.NoError(t, os.Mkdir(src, 0o700))
	require.NoError(t, os.Mkdir(mnt, 0o700))
	if out, err := exec.Command(bindfs, src, mnt).CombinedOutput(); err != nil {
		t.Skipf("bindfs could not mount (%v): %s", err, out)
	}
	defer func() { require.NoError(t, unix.Unmount(mnt, unix.MNT_DETACH)) }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = cluster.Join(ctx, cluster.Config{Name: "fuse", Dir: mnt, Lead: cluster.LeadNever})
	require.ErrorIs(t, err, cluster.ErrConfig)
	require.ErrorContains(t, err, "fuse")
	require.ErrorContains(t, err, mnt)
	t.Logf("refused as it should be: %v", err)
	ents, err := os.ReadDir(src)
	require.NoError(t, err)
	require.Empty(t, ents, "Join created files on the FUSE filesystem")
}

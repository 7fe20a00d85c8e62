package lock_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/lock"
)

// Held tells a held lock from a free one without touching it.
func TestHeldSeesTheLockWithoutTakingIt(t *testing.T) {
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "x.lock")

	held, known := lock.Held(path)
	require.False(t, held)
	require.False(t, known, "no file: cannot tell")

	l := lock.New(path)
	won, err := l.TryLock()
	require.NoError(t, err)
	require.True(t, won)
	held, known = lock.Held(path)
	require.True(t, known)
	require.True(t, held)

	require.NoError(t, l.Unlock())
	held, known = lock.Held(path)
	require.True(t, known)
	require.False(t, held)

	// Held took nothing: the lock is free for the next holder.
	l2 := lock.New(path)
	won, err = l2.TryLock()
	require.NoError(t, err)
	require.True(t, won)
	require.NoError(t, l2.Unlock())
}

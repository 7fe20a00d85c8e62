package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// A Dir on a network or userspace filesystem is refused before anything is created in
// it: the lock could be shared across hosts while the socket is not. The real statfs is
// exercised by lock's tests and, where bindfs is installed, by TestDirOnFUSEIsRefused.
func TestDirOnANetworkFilesystemIsRefused(t *testing.T) {
	dir, err := os.MkdirTemp("", "")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	env := hostEnv
	for _, kind := range []string{"nfs", "cifs", "fuse.sshfs", "virtiofs", "9p"} {
		env.fsKind = func(string) (string, bool, error) { return kind, true, nil }
		_, err := Config{Name: "n", Dir: dir, Lead: LeadNever}.prepare(env)
		require.ErrorIs(t, err, ErrConfig, kind)
		require.ErrorContains(t, err, "Dir: "+dir+" is on a "+kind+" filesystem")
		require.ErrorContains(t, err, "named volume")
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Empty(t, ents)

		// A Dir that does not exist yet is judged by where it would be created, and
		// is not created.
		sub := filepath.Join(dir, "a", "b")
		var asked string
		env.fsKind = func(p string) (string, bool, error) { asked = p; return kind, true, nil }
		_, err = Config{Name: "n", Dir: sub, Lead: LeadNever}.prepare(env)
		require.ErrorIs(t, err, ErrConfig, kind)
		require.Equal(t, dir, asked)
		require.NoDirExists(t, filepath.Join(dir, "a"))
	}
	// statfs failing is no reason to refuse: the lock and the socket report real problems.
	env.fsKind = func(string) (string, bool, error) { return "", false, errors.New("statfs: EIO") }
	_, err = Config{Name: "n", Dir: dir, Lead: LeadNever}.prepare(env)
	require.NoError(t, err)
}

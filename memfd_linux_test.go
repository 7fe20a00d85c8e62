package cluster_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// unsealedMemfd returns a memfd holding content with no seals: a blob a hostile sender
// could still change after passing it.
func unsealedMemfd(t *testing.T, content string) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fd), "unsealed")
	_, err = f.WriteString(content)
	require.NoError(t, err)
	return f
}

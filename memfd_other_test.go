//go:build !linux

package cluster_test

import (
	"os"
	"testing"
)

// unsealedMemfd skips t: memfds, and so blobs, are Linux's.
func unsealedMemfd(t *testing.T, _ string) *os.File {
	t.Helper()
	t.Skip("memfd is Linux-only: there are no blobs to forge here")
	return nil
}

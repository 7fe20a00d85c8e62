package ipc

import (
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// pipeWith returns the read end of a pipe holding content, write end closed. It is
// closed at the end of the test if the test has not closed it.
func pipeWith(t *testing.T, content string) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	_, err = w.WriteString(content)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	t.Cleanup(func() { _ = r.Close() }) // a test that stops early leaves no descriptor behind
	return r
}

// readAllClose reads f to the end and closes it.
func readAllClose(t *testing.T, f *os.File) string {
	t.Helper()
	defer f.Close()
	b, err := io.ReadAll(f)
	require.NoError(t, err)
	return string(b)
}

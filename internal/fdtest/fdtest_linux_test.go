package fdtest

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAddedListsWhatWasOpenedAndIgnoresWhatWasClosed(t *testing.T) {
	older, err := os.Open(os.DevNull)
	require.NoError(t, err)
	s := Take(t)
	require.Empty(t, s.Added(t), "nothing opened yet")

	require.NoError(t, older.Close()) // closed under the test: not the test's leak
	r, w, err := os.Pipe()
	require.NoError(t, err)
	added := s.Added(t)
	require.Len(t, added, 2, "the pipe's two ends, even if one reuses the closed number: %v", added)
	for _, a := range added {
		require.True(t, strings.HasSuffix(a, "]") && strings.Contains(a, "pipe:["), a)
	}

	require.NoError(t, r.Close())
	require.NoError(t, w.Close())
	require.Empty(t, s.Added(t))
	s.RequireNoneAdded(t)
}

func TestRequireNoneAddedFailsOnALeak(t *testing.T) {
	s := Take(t)
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer f.Close()
	defer func(d time.Duration) { settle = d }(settle)
	settle = 50 * time.Millisecond
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { _ = recover() }() // the recorder's Fatalf panics to stop the check
		s.RequireNoneAdded(rec)
	}()
	<-done
	require.Contains(t, rec.msg, "descriptors leaked: 1 still open")
	require.Contains(t, rec.msg, os.DevNull)
}

// recorder keeps what Fatalf would print instead of failing the real test.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	panic("fatal")
}

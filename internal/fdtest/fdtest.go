// Package fdtest lets tests check that they closed every file descriptor they opened.
//
// A leak check that counts descriptors breaks when descriptors opened before the test
// are closed during it: a finalizer closing a file an earlier test dropped, or a Conn's
// reader goroutine finishing a Close that returned before it. Both happen in a test
// binary that runs many tests. This package compares what each descriptor refers to
// (/proc/self/fd: "pipe:[1234]", "socket:[5678]") instead, so descriptors that go away
// under a test are not counted against it. The check is only possible on Linux; the
// package builds everywhere, and on other systems Take skips the test.
package fdtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// Snapshot is what this process's descriptors referred to when it was taken, by number.
type Snapshot map[int]string

// settle bounds how long RequireNoneAdded waits for descriptors to be closed by other
// goroutines: a Conn's reader or writer ending, a runtime poller. A variable for this
// package's own test of a failing check.
var settle = 10 * time.Second

// Added lists the descriptors open now that were not open, to the same object, when s
// was taken, as "fd 12: pipe:[1234]".
func (s Snapshot) Added(t testing.TB) []string {
	t.Helper()
	var added []string
	for fd, target := range Take(t) {
		if s[fd] != target {
			added = append(added, fmt.Sprintf("fd %d: %s", fd, target))
		}
	}
	slices.Sort(added)
	return added
}

// RequireNoneAdded fails t unless, within a few seconds, every descriptor opened since s
// was taken has been closed.
func (s Snapshot) RequireNoneAdded(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for {
		added := s.Added(t)
		if len(added) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("descriptors leaked: %d still open that were not before:\n\t%s", len(added), strings.Join(added, "\n\t"))
		}
		time.Sleep(time.Millisecond)
	}
}

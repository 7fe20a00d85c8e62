package fdtest

import (
	"os"
	"strconv"
	"testing"
)

// Take records what every descriptor of this process refers to. It first starts the
// runtime's network poller, which opens its own descriptors at first use and keeps them,
// so that they are never taken for the test's.
func Take(t testing.TB) Snapshot {
	t.Helper()
	r, w, err := os.Pipe() // a pipe is pollable: this starts the poller
	if err != nil {
		t.Fatalf("fdtest: %v", err)
	}
	r.Close()
	w.Close()
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		t.Fatalf("fdtest: %v", err)
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		t.Fatalf("fdtest: reading /proc/self/fd: %v", err)
	}
	own := int(dir.Fd())
	s := make(Snapshot, len(names))
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil || fd == own {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + name)
		if err != nil {
			continue // closed since the listing
		}
		s[fd] = target
	}
	return s
}

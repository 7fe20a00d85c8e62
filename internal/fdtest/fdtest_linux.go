package fdtest

import (
	"os"
	"strconv"
	"sync"
	"testing"
)

// startPoller starts the runtime's network poller, once: a pipe is pollable.
var startPoller = sync.OnceValue(func() error {
	r, w, err := os.Pipe()
	if err == nil {
		r.Close()
		w.Close()
	}
	return err
})

// Take records what every descriptor of this process refers to. It first starts the
// runtime's network poller, which opens its own descriptors at first use and keeps them,
// so that they are never taken for the test's.
func Take(t testing.TB) Snapshot {
	t.Helper()
	if err := startPoller(); err != nil {
		t.Fatalf("fdtest: starting the network poller: %v", err)
	}
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

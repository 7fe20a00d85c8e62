package lock_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cluster-client-go/cluster/lock"
)

// Two members of one cluster, here in one process: the first wins term 1, the second loses
// until the first releases, then wins term 2.
func Example() {
	dir, err := os.MkdirTemp("", "")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	if err := lock.PrepareDir(dir, true, lock.Share{}); err != nil {
		panic(err)
	}
	path := filepath.Join(dir, "demo.lock")
	a, b := lock.New(path), lock.New(path)

	won, err := a.TryLock()
	fmt.Println("a won:", won, err, "term", a.Term())
	won, err = b.TryLock()
	fmt.Println("b won:", won, err)

	if err := a.Unlock(); err != nil { // releases; the file stays
		panic(err)
	}
	won, err = b.TryLock()
	fmt.Println("b won:", won, err, "term", b.Term())
	_ = b.Unlock()
	// Output:
	// a won: true <nil> term 1
	// b won: false <nil>
	// b won: true <nil> term 2
}

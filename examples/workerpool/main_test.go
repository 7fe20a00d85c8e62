package main

import (
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cluster-client-go/cluster/examples/internal/exampletest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo runs the whole demo with the worker built from ./worker: one upstream
// connection for the pool, a SIGKILL of the Leader, a new Leader, subscriptions and
// invokes working again, and SIGTERM closing every survivor.
func TestDemo(t *testing.T) {
	worker := filepath.Join(t.TempDir(), "worker")
	exampletest.Build(t, "./worker", worker)
	if err := coordinate(worker, 3, 2*time.Minute, false); err != nil {
		t.Fatal(err)
	}
}

// TestWorkerBuildsInAModuleOfItsOwn copies ./worker, the program users copy, into a
// module of its own outside this one and builds it there: it must use only the public
// API.
func TestWorkerBuildsInAModuleOfItsOwn(t *testing.T) {
	exampletest.BuildCopy(t, "worker")
}

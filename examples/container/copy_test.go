package container

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cluster-client-go/cluster/examples/internal/exampletest"
)

// TestWorkerBuildsInAModuleOfItsOwn copies ./worker, the program users copy (and the
// one the Dockerfile builds), into a module of its own outside this one and builds it
// there: it must use only the public API.
func TestWorkerBuildsInAModuleOfItsOwn(t *testing.T) {
	exampletest.BuildCopy(t, "worker")
}

// TestWorkerUpstreamClientIsWorkerpools checks that worker/upstream.go is the same file
// as examples/workerpool's: each example stands alone when copied, so each has its copy
// of the demo's upstream client, and a fix to one must reach the other.
func TestWorkerUpstreamClientIsWorkerpools(t *testing.T) {
	ours, err := os.ReadFile("worker/upstream.go")
	require.NoError(t, err)
	theirs, err := os.ReadFile("../workerpool/worker/upstream.go")
	require.NoError(t, err)
	require.Equal(t, string(theirs), string(ours), "examples/container/worker/upstream.go differs from examples/workerpool/worker/upstream.go: change both")
}

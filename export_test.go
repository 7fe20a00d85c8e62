package cluster

import (
	"testing"
	"time"
)

// SetBatchStall sets how long a batch runs before the calls after it no longer wait
// for it, until t ends. Call it before the test starts a cluster.
func SetBatchStall(t *testing.T, d time.Duration) {
	old := batchStall
	batchStall = d
	t.Cleanup(func() { batchStall = old })
}

package main

import (
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// coordinate re-executes this binary as the workers.
	if os.Getenv("WORKERPOOL_WORKER") != "" {
		os.Exit(worker())
	}
	goleak.VerifyTestMain(m)
}

// TestDemo runs the whole demo: one upstream connection for the pool, a SIGKILL of the
// Leader, a new Leader, subscriptions and invokes working again.
func TestDemo(t *testing.T) {
	if err := coordinate(3, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// Package chaos is the project's fault-injection suite; it lives in the package's
// tests. TestChaos starts member processes (the test binary re-executed), an upstream
// server that pushes a numbered stream, and a controller that, under constant invoke,
// publish and subscribe load from every member, repeatedly SIGKILLs the Leader, stops
// it (SIGSTOP for longer than the heartbeat timeout, then SIGCONT) or closes it,
// restarting members as they die. After every fault it checks: never two Leaders at
// once and never two live upstream connections; every call returns success,
// ErrLeaderLost or ErrTimeout, and none long after its deadline; per-term subscription
// continuity (no gap, repeat or reordering that a re-subscription does not explain) and
// replay of the latest value to late subscribers; no goroutine or descriptor leak in a
// member that closes. It reports failover times and counts per fault kind.
// TestChaosManyFollowers does the same with 32 members and 4 faults: a failover is then
// many Followers reconnecting to the new Leader at once.
//
//	go test -race ./internal/chaos/                          # the short form, 24 faults; 4 with 32 members
//	go test ./internal/chaos/ -chaos.duration=10m -timeout 0 # a soak run
package chaos

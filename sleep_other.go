//go:build !linux && !freebsd

package cluster

import "time"

// shortSleep sleeps d, which is under a millisecond.
func shortSleep(d time.Duration) { time.Sleep(d) }

//go:build linux || freebsd

package cluster

import (
	"time"

	"golang.org/x/sys/unix"
)

// shortSleep sleeps d, which is under a millisecond, in a nanosleep on this thread. The
// runtime's timers, in an otherwise idle process, wake about a millisecond late at
// best, which would stretch the sub-millisecond retries of a failover to a millisecond
// each.
func shortSleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}

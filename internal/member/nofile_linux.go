//go:build linux

package member

import "golang.org/x/sys/unix"

// setNoFile lowers this process's RLIMIT_NOFILE to n.
func setNoFile(n uint64) error {
	return unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: n})
}

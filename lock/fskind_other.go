//go:build !linux

package lock

// FSKind reports the filesystem type of dir and whether it is a network or userspace
// filesystem on which the lock or the socket cannot be trusted to be host-local. Only Linux
// is implemented (statfs magic numbers); elsewhere it returns ("", false, nil) and does not
// touch the filesystem.
func FSKind(dir string) (name string, network bool, err error) {
	return "", false, nil
}

//go:build !linux

package cluster

// openFDs is unknown here: the Leader does not count descriptors.
func openFDs() int64 { return -1 }

package cluster

import "os"

// openFDs counts this process's open descriptors (the entries of /proc/self/fd, less
// the one reading it), or returns -1 when it cannot.
func openFDs() int64 {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return -1
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return -1
	}
	return int64(len(names)) - 1
}

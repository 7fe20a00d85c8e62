package cluster

import (
	"os"
	"strings"
)

// guardSupported: the TCP transport guards its election with flock where network
// namespaces exist (Linux), so that Leaders in two of them are detected.
const guardSupported = true

// netNamespace returns the inode number of this process's network namespace
// ("4026531840" for "net:[4026531840]"), or "" when it cannot be read.
func netNamespace() string {
	link, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return ""
	}
	if rest, ok := strings.CutPrefix(link, "net:["); ok {
		return strings.TrimSuffix(rest, "]")
	}
	return ""
}

//go:build !linux

package cluster

// guardSupported: there are no network namespaces here, so the TCP transport's port
// competition alone decides (and on Windows the lock file stays untouched).
const guardSupported = false

// netNamespace returns "": there are no network namespaces here.
func netNamespace() string { return "" }

//go:build !linux && !windows

package ipc

import "os"

// pinInode is Linux-only; elsewhere Unlink compares device and inode numbers alone,
// which the election lock's ordering (unlink before release) makes sufficient.
func pinInode(string) *os.File { return nil }

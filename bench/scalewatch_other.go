//go:build !linux

package main

import "time"

// renameWatch, off Linux, looks again every 100 µs.
type renameWatch struct{}

func newRenameWatch(string, string) (*renameWatch, error) { return &renameWatch{}, nil }

func (*renameWatch) wait() { time.Sleep(100 * time.Microsecond) }

//go:build !linux

// The demo's scaffolding: elsewhere, workers get no death signal.

package main

import "syscall"

func workerProcAttr() *syscall.SysProcAttr { return nil }

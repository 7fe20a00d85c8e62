// The demo's scaffolding: Linux-only process attributes of the workers.

package main

import "syscall"

// workerProcAttr makes the kernel send a worker SIGTERM if the coordinator dies first,
// so that no worker outlives the demo.
func workerProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

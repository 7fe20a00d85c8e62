//go:build !linux

package ipc

import (
	"net"
	"os"
)

// Passing descriptors is implemented on Linux only: the reader's attachment rule (see
// fdReader) depends on how Linux's unix-stream recvmsg returns them.

func canPassFiles(net.Conn) bool { return false }

func dupFile(*os.File) (int, error) { return -1, ErrFDUnsupported }

// closeFDs is never given descriptors here: dupFile makes none.
func closeFDs([]int) {}

func writeWithFDs(net.Conn, []byte, []int) error { return ErrFDUnsupported }

// newFDSource returns nil: the Conn reads through a bufio.Reader.
func newFDSource(*Conn) frameSource { return nil }

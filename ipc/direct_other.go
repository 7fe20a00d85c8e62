//go:build !unix

package ipc

import "net"

// directWriter is the direct write path, which exists only on Unix systems: elsewhere
// every frame goes through the writer goroutine.
type directWriter struct{}

func (w *directWriter) init(net.Conn) bool { return false }

func (w *directWriter) write(b []byte) (int, error) { return 0, nil }

package ipc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
)

// maxUnixPath is the longest socket path this platform's sun_path holds.
var maxUnixPath = 107

var errNoUnix = fmt.Errorf("unix-socket transport on windows: %w (use the TCP transport)", errors.ErrUnsupported)

// Listener is not available on Windows; the TCP transport is the default there.
type Listener struct{}

// CheckUnixPath reports that Unix sockets are not used on Windows.
func CheckUnixPath(string) error { return errNoUnix }

// ListenUnix is unsupported on Windows.
func ListenUnix(string, os.FileMode) (*Listener, error) { return nil, errNoUnix }

// ListenUnixGroup is unsupported on Windows.
func ListenUnixGroup(string, os.FileMode, int) (*Listener, error) { return nil, errNoUnix }

// Accept is unsupported on Windows.
func (*Listener) Accept() (net.Conn, PeerCred, error) { return nil, PeerCred{}, errNoUnix }

// Addr returns "".
func (*Listener) Addr() string { return "" }

// Close does nothing.
func (*Listener) Close() error { return nil }

// Unlink does nothing.
func (*Listener) Unlink() error { return nil }

// DialUnix is unsupported on Windows.
func DialUnix(context.Context, string) (net.Conn, error) { return nil, errNoUnix }

//go:build !unix

package blob_test

import (
	"errors"
	"os"
)

// dupFD is never called here: File is nil on this system.
func dupFD(uintptr) (*os.File, error) { return nil, errors.ErrUnsupported }

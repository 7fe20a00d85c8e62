//go:build !unix

package cluster

import (
	"fmt"
	"os"
)

// dupFile is not available here: no transport of this platform passes descriptors.
func dupFile(f *os.File) (*os.File, error) {
	return nil, fmt.Errorf("duplicating %s: %w", f.Name(), ErrFDUnsupported)
}

// fdLimit is unknown here: the Leader does not count descriptors.
func fdLimit() int64 { return 0 }

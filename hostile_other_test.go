//go:build !unix

package cluster_test

import (
	"errors"
	"fmt"
	"os"
)

// attackMain needs Unix sockets: the hostile-peer tests run on Linux only.
func attackMain() int {
	fmt.Fprintln(os.Stderr, "the attack role needs Unix sockets")
	return 2
}

func setNoFile(string) error { return errors.ErrUnsupported }

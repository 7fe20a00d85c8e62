//go:build !linux

package cluster_test

import (
	"errors"
	"fmt"
	"os"
)

// attackMain: the hostile-peer tests run on Linux only.
func attackMain() int {
	fmt.Fprintln(os.Stderr, "the attack role runs on Linux only")
	return 2
}

func setNoFile(string) error { return errors.ErrUnsupported }

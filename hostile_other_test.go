//go:build !linux

package cluster_test

import (
	"fmt"
	"os"

	"github.com/cluster-client-go/cluster/internal/member"
)

// attackMain: the hostile-peer tests run on Linux only.
func attackMain(member.Config, memberArgs) int {
	fmt.Fprintln(os.Stderr, "the attack role runs on Linux only")
	return 2
}

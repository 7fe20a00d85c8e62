// Command bench measures cluster side by side with the floor and its peers, in one
// run, so that the ratios hold on a noisy machine: real processes (one Leader, three
// Followers) over Unix sockets and loopback TCP; raw sockets between processes with no
// library (the floor); gRPC unary over a Unix socket; and, when node and npm are
// installed, the Node.js cluster-client package itself (installed into a scratch
// directory). It prints a table, and writes a JSON file and a chart.
//
//	go run .            # the full run, a few minutes (from bench/)
//	go run . -smoke     # every measurement once, tiny: what CI runs
//
// See README.md in this directory for what each figure means.
package main

import (
	"fmt"
	"os"

	"github.com/cluster-client-go/cluster/internal/member"
)

func main() {
	if cfg, ok, err := member.FromEnv(); ok { // a Go cluster member (startMember)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		os.Exit(memberMain(cfg))
	}
	if len(os.Args) > 2 && os.Args[1] == "agent" {
		args := os.Args[3:]
		switch os.Args[2] {
		case "floor-server":
			floorServerMain(args)
		case "floor-client":
			floorClientMain(args)
		case "grpc-server":
			grpcServerMain(args)
		case "grpc-client":
			grpcClientMain(args)
		case "redis-worker":
			redisWorkerMain(args)
		case "lock-holder":
			lockHolderMain(args)
		default:
			fmt.Fprintln(os.Stderr, "bench: unknown agent", os.Args[2])
			os.Exit(2)
		}
		return
	}
	os.Exit(run(os.Args[1:]))
}

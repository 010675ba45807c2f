package main

import (
	"context"
	"fmt"
	"slices"
)

func init() {
	register(&command{name: "coordinator", summary: "run a dedicated coordinator: competes for the lease and coordinates, takes no partitions", run: runCoordinator})
}

const coordinatorHelp = `helix coordinator [flags]

A dedicated coordinator: it competes for the coordinator lease and, while it holds it,
plans and moves partitions, but takes none itself. It is exactly 'helix node --no-work':
for deployments where the workers embed the SDK (or run 'helix node --no-candidate')
and coordinators run apart, on hosts of their own. Run two or three for failover.

  HELIX_DSN='…' helix coordinator --id coord-1 --http :9464

Its flags are helix node's (below); --exec and --no-candidate make no sense here.
`

// runCoordinator is `helix node --no-work`.
func runCoordinator(ctx context.Context, e *env, args []string) int {
	if slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "-help" || a == "--help" }) {
		fmt.Fprint(e.stdout, coordinatorHelp+"\n")
	}
	return runNode(ctx, e, append([]string{"--no-work"}, args...))
}

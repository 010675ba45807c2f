package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/helixcoord/helix"
	"github.com/helixcoord/helix/engine"
)

func init() {
	register(&command{name: "drain", summary: "drain a node (move its partitions away) or undrain it", run: runDrain})
}

const drainExamples = `  # Mark worker-3 draining: the coordinator moves its partitions to other nodes.
  helix drain worker-3

  # ... and wait until it owns nothing (at most 2 minutes):
  helix drain --wait --timeout 2m worker-3

  # Let it take partitions again:
  helix drain --undrain worker-3
`

func runDrain(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "drain", "helix drain [flags] NODE", drainExamples)
	var sf storeFlags
	sf.register(fs)
	undrain := fs.Bool("undrain", false, "clear the draining flag instead")
	wait := fs.Bool("wait", false, "wait until the node owns no partition")
	timeout := fs.Duration("timeout", time.Minute, "with --wait: give up after this long")
	var leaseKey string
	leaseKeyFlag(fs, &leaseKey)
	pos, code, ok := parseFlags(e, fs, args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return badUsage(e, fs, "want exactly one NODE, got %q", pos)
	}
	id := pos[0]
	if err := engine.ValidateName("NODE", id); err != nil {
		return badUsage(e, fs, "%v", err)
	}
	store, err := sf.open(ctx, e)
	if err != nil {
		return fail(e, "drain", err)
	}
	defer store.Close()
	draining := !*undrain
	if _, err := store.UpdateNode(ctx, id, engine.NodeUpdate{Draining: &draining}); err != nil {
		if errors.Is(err, engine.ErrNotFound) {
			return fail(e, "drain", fmt.Errorf("node %q is not registered", id))
		}
		return fail(e, "drain", err)
	}
	if *undrain {
		fmt.Fprintf(e.stdout, "node %s undrained\n", id)
		return 0
	}
	fmt.Fprintf(e.stdout, "node %s draining\n", id)
	if !*wait {
		return 0
	}
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for {
		cs, err := helix.ReadClusterStatus(wctx, store, leaseKey)
		if err == nil {
			owned := -1
			for _, n := range cs.Nodes {
				if n.ID == id {
					owned = n.Total
				}
			}
			if owned <= 0 {
				fmt.Fprintf(e.stdout, "node %s drained\n", id)
				return 0
			}
		}
		select {
		case <-wctx.Done():
			return fail(e, "drain", fmt.Errorf("node %s still owns partitions after %v", id, *timeout))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

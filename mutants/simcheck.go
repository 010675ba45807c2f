package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/helixcoord/helix/scenarios"
	"github.com/helixcoord/helix/sim"
)

// runSimcheck is the simulator half of a mutant's run, executed inside the patched copy:
// seeds 1..n, each over every built-in scenario, each run twice with the store's list
// replies in two different orders. It prints "CAUGHT seed S scenario X invariant I" at
// the first failure and returns 1, or "PASSED" and 0. A "RUN" line before each run says
// where a crash or a hang happened.
func runSimcheck(n int, only string) int {
	all, err := scenarios.All()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if only != "" {
		var sel []*sim.Scenario
		for _, name := range strings.Split(only, ",") {
			sc, err := scenarios.Builtin(strings.TrimSpace(name))
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			sel = append(sel, sc)
		}
		all = sel
	}
	for seed := 1; seed <= n; seed++ {
		for _, sc := range all {
			fmt.Printf("RUN seed %d scenario %s\n", seed, sc.Name)
			d, err := sim.CheckDeterminism(sc, sim.Options{Seed: uint64(seed), ForceShuffle: true}, 0, 1)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			r := d.ResultA
			switch {
			case !r.Passed && r.Violation != nil:
				fmt.Printf("CAUGHT seed %d scenario %s invariant %s\n%s", seed, sc.Name, r.Violation.Invariant, r.Violation)
				return 1
			case !r.Passed:
				fmt.Printf("CAUGHT seed %d scenario %s invariant missing-%s\n", seed, sc.Name, r.ExpectedViolation)
				return 1
			case !d.Identical:
				fmt.Printf("CAUGHT seed %d scenario %s invariant D1\n%s", seed, sc.Name, strings.TrimSpace(d.String()))
				return 1
			}
		}
	}
	fmt.Printf("PASSED %d seeds\n", n)
	return 0
}

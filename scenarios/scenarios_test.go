package scenarios

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/sim"
)

func seedsFor(t *testing.T, name string) int {
	n := 20
	if name == "join-200" || name == "mixed-faults" {
		n = 5 // hundreds of nodes: fewer seeds keep the package within its time budget
	}
	if testing.Short() {
		n = min(n, 3)
	}
	return n
}

// TestScenarios runs every built-in scenario over many seeds: each must pass (no
// violation, or exactly the one it declares).
func TestScenarios(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 17 {
		t.Fatalf("want at least 17 built-in scenarios, have %d", len(all))
	}
	var mu sync.Mutex
	coverage := map[string]int{}
	t.Run("library", func(t *testing.T) {
		for _, sc := range all {
			runScenario(t, sc, &mu, coverage)
		}
	})
	if t.Failed() {
		return
	}
	// The library as a whole must reach every fault kind and the interesting states:
	// a fault that is never injected, or a race that never happens, proves nothing.
	var missing []string
	for _, k := range []string{
		"action_crash", "action_pause", "action_partition", "action_clock", "action_store_outage", "action_latency",
		"action_loss", "action_put_tasklist", "action_delete_tasklist", "action_drain", "action_undrain", "action_join",
		"action_leave", "action_lease_reset",
		"leader_change", "leader_change_with_apply_in_flight", "release_racing_death", "ambiguous_write",
		"fenced_write_rejected", "zombie_coordinator_resumed", "zombie_worker_resumed", "stop_self_fenced",
		"heartbeat_refused_dead", "request_applied_after_client_deadline", "late_request_delivered",
		"pause_between_decision_and_write", "drift_beyond_bound", "drift_within_bound", "clock_jump",
		"graceful_shutdown_completed", "partition_deleted", "nodes_declared_dead", "store_outage_hit",
		// The format additions of issue 12.
		"action_store_fault", "apply_committed_then_error", "apply_deadlock_rolled_back", "pause_with_read_in_flight",
		"node_died_for_good", "heal_moved_by_late_fault", "probe_lease_expiry", "probe_dead_after", "probe_stale_ack",
	} {
		if coverage[k] == 0 {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Errorf("never reached by the scenario library: %v", missing)
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(coverage)) {
		fmt.Fprintf(&b, "  %-40s %d\n", k, coverage[k])
	}
	t.Logf("coverage of the library:\n%s", b.String())
}

func runScenario(t *testing.T, sc *sim.Scenario, mu *sync.Mutex, coverage map[string]int) {
	t.Run(sc.Name, func(t *testing.T) {
		t.Parallel()
		var sum sim.Summary
		for seed := uint64(1); seed <= uint64(seedsFor(t, sc.Name)); seed++ {
			r, err := sim.Run(sc, sim.Options{Seed: seed})
			if err != nil {
				t.Fatal(err)
			}
			sum.Add(r)
			if !r.Passed {
				if r.Violation != nil {
					t.Fatalf("seed %d:\n%s", seed, r.Violation)
				}
				t.Fatalf("seed %d: expected violation %s was not found", seed, sc.Expect.Violation)
			}
		}
		t.Logf("%d seeds: coordinator failover p50 %v max %v; worker failover p50 %v max %v; moves %d; expected violations %d",
			sum.Seeds, sum.CoordP50, sum.CoordMax, sum.WorkerP50, sum.WorkerMax, sum.Moves, sum.Expected)
		mu.Lock()
		defer mu.Unlock()
		for k, v := range sum.Coverage {
			coverage[k] += v
		}
	})
}

func TestNamesMatchFiles(t *testing.T) {
	for _, n := range Names() {
		sc, err := Builtin(n)
		if err != nil {
			t.Fatal(err)
		}
		if sc.Description == "" {
			t.Errorf("%s: no description", n)
		}
	}
	for _, want := range []string{"cold-start", "rolling-restart", "coordinator-crash", "coordinator-pause", "worker-crash",
		"node-cutoff", "store-outage", "store-latency-spike", "ambiguous-writes", "clock-skew-within-bound",
		"clock-drift-beyond-bound", "join-200", "drain", "scale-down-half", "flapping-node", "tasklist-resize", "swarm"} {
		if _, err := Builtin(want); err != nil {
			t.Errorf("missing scenario %s: %v", want, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"name":"x","duration":"10s","nodes":[{"prefix":"n","count":1}],"bogus":1}`, `unknown field "bogus"`},
		{`{"name":"x","duration":10,"nodes":[{"prefix":"n","count":1}]}`, `duration must be a string`},
		{`{"name":"x","duration":"10s","nodes":[]}`, `scenario.nodes`},
		{`{"name":"x","duration":"10s","nodes":[{"prefix":"n","count":0}]}`, `scenario.nodes[0].count`},
		{`{"name":"x","duration":"10s","nodes":[{"prefix":"n","count":1}],"timeline":[{"at":"1s","do":"explode"}]}`, `scenario.timeline[0].do`},
		{`{"name":"x","duration":"10s","nodes":[{"prefix":"n","count":1}],"timeline":[{"at":"1s","do":"pause","target":"n1"}]}`, `scenario.timeline[0].for`},
		{`{"name":"x","duration":"10s","nodes":[{"prefix":"n","count":1}],"timeline":[{"at":"20s","do":"crash","target":"n1"}]}`, `scenario.timeline[0].at`},
		{`{"name":"x","duration":"10s","nodes":[{"prefix":"n","count":1}],"config":{"lease_ttl":"1s","renew_interval":"1s"}}`, `config.LeaseTTL`},
		{`{"name":"x","duration":"10s","nodes":[{"prefix":"n","count":1}],"tasklists":[{"domain":"d","name":"t","partitions":0}]}`, `tasklist.partitions`},
		{`{"name":"x","duration":"10s","nodes":[{"prefix":"n","count":1}],"expect":{"violation":"S9"}}`, `scenario.expect.violation`},
		{`{"name":"x","duration":"10s","nodes":[{"prefix":"n","count":1}]} {}`, `unexpected data`},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.in), "test.json")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%s): error %v, want one containing %q", c.in, err, c.want)
		}
	}
	_, err := Parse([]byte(`{"name":"x","duration":"10s","nodes":[{"prefix":"n","count":0}]}`), "t.json")
	if !errors.Is(err, engine.ErrInvalid) {
		t.Errorf("validation errors must wrap engine.ErrInvalid, got %v", err)
	}
}

func TestLoad(t *testing.T) {
	if _, err := Load("cold-start"); err != nil {
		t.Fatal(err)
	}
	if _, err := Load("no-such"); err == nil || !strings.Contains(err.Error(), "not a built-in scenario") {
		t.Fatalf("Load(no-such): %v", err)
	}
	if _, err := Load("./nope.json"); err == nil {
		t.Fatal("Load of a missing file must fail")
	}
}

package sim

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/helixcoord/helix/internal/flaw"
)

// The teeth tests prove the simulator catches bugs: each switches on one deliberate flaw
// of internal/flaw in the engine or the store and asserts that a violation of the
// invariant the flaw breaks is found within a stated number of seeds. Each scenario is
// also run without the flaw (the control), which must find nothing: the catch is the
// flaw's doing, not the scenario's.

func sec(s float64) Duration { return Duration(time.Duration(s * float64(time.Second))) }

func f64(x float64) *float64 { return &x }

// teethBase is a small cluster: 5 nodes, two task lists whose sizes leave remainders
// (so allocation has ties to break), fast network.
func teethBase(name string, dur float64) *Scenario {
	return &Scenario{
		Name:      name,
		Duration:  sec(dur),
		Nodes:     []NodeGroup{{Prefix: "n", Count: 5}},
		TaskLists: []TaskListDef{{Domain: "d", Name: "a", Partitions: 23}, {Domain: "d", Name: "b", Partitions: 7}},
		Network:   Network{Latency: Latency{Base: Duration(time.Millisecond), Jitter: Duration(2 * time.Millisecond)}},
		Expect:    Expect{NoLiveness: true},
	}
}

type tooth struct {
	flaw     string
	node     flaw.Set
	store    flaw.Set
	scenario *Scenario
	bound    int      // seeds within which the flaw must be caught
	want     []string // invariants that count as catching it
	// determinism: caught by running each seed twice with the store's list replies in
	// different orders (CheckDeterminism with ForceShuffle), not by an invariant.
	determinism bool
	why         string
	// unreachable explains why the simulator cannot reach the flaw through the Node;
	// the test still tries, and reports it either way.
	unreachable string
}

func teeth() []tooth {
	var out []tooth

	// S2: the coordinator pauses between deciding to write and writing (a GC pause
	// right after its Apply was built) for 4–6s, about as long as its lease has left;
	// its driver then sends the stale Apply. Only the store's fence stops it. (A stale
	// Apply that lands after the next coordinator rewrote the same rows fails on row
	// revisions anyway, so the pauses vary to land some in between.)
	sc := teethBase("teeth-fence", 100)
	sc.Config.RetryPeriod = sec(2)
	sc.Timeline = []Action{{At: sec(8), Do: DoCrash, Target: "worker", For: sec(3), Repeat: 17, Every: sec(5)}}
	for i, d := range []float64{4.2, 4.6, 5.0, 5.4, 5.8, 6.2} {
		sc.Timeline = append(sc.Timeline, Action{At: sec(12 + 13*float64(i)), Do: DoPause, Target: "coordinator", Hold: "apply", For: sec(d)})
	}
	out = append(out, tooth{flaw: "StoreNoEpochCheck", store: flaw.StoreNoEpochCheck, scenario: sc, bound: 20, want: []string{"S2"},
		why: "coordinator paused between building an Apply and sending it"})

	// S3: a worker cut off long enough to be declared dead comes back; its old
	// incarnation's heartbeat is accepted and it resumes partitions that moved.
	sc = teethBase("teeth-old-incarnation", 70)
	sc.Timeline = []Action{{At: sec(15), Do: DoPartition, Target: "worker", For: sec(10), Buffer: true, Repeat: 2, Every: sec(20)}}
	out = append(out, tooth{flaw: "StoreAcceptOldIncarnation", store: flaw.StoreAcceptOldIncarnation, scenario: sc, bound: 5, want: []string{"S3"},
		why: "worker partitioned (buffering) past dead_after: its old heartbeats arrive at the heal"})

	// S1 (lease table): a 7s latency spike makes renewals arrive after the lease
	// expired; the store must refuse them.
	sc = teethBase("teeth-renew-after-expiry", 90)
	sc.Timeline = []Action{{At: sec(20), Do: DoLatency, For: sec(12), Latency: &Latency{Base: sec(7)}, Repeat: 2, Every: sec(25)}}
	out = append(out, tooth{flaw: "StoreRenewAfterExpiry", store: flaw.StoreRenewAfterExpiry, scenario: sc, bound: 20, want: []string{"S1"},
		why: "7s latency spikes: renewals reach the store after the lease expired"})

	// S3: a worker cut off from the store keeps processing after its liveness ran out.
	sc = teethBase("teeth-self-fence", 50)
	sc.Timeline = []Action{{At: sec(15), Do: DoPartition, Target: "worker", For: sec(12)}}
	out = append(out, tooth{flaw: "NodeNoSelfFence", node: flaw.NodeNoSelfFence, scenario: sc, bound: 5, want: []string{"S3"},
		why: "worker partitioned from the store"})

	// S1: the coordinator's link is slow (400ms each way) while the others' is fast:
	// counting its lease from the reply overstates it by ~400ms, and once partitioned
	// it believes past the store's expiry, into a fast standby's tenure.
	sc = teethBase("teeth-lease-from-reply", 90)
	sc.Timeline = []Action{
		{At: sec(10), Do: DoLatency, Target: "coordinator", For: sec(14), Latency: &Latency{Base: Duration(400 * time.Millisecond)}, Repeat: 2, Every: sec(25)},
		{At: sec(20), Do: DoPartition, Target: "coordinator", For: sec(8), Repeat: 2, Every: sec(25)},
	}
	out = append(out, tooth{flaw: "NodeLeaseFromReply", node: flaw.NodeLeaseFromReply, scenario: sc, bound: 20, want: []string{"S1"},
		why: "the coordinator's link is slow (400ms), then it is partitioned"})

	// S3: moves (joins, a drain) with the new owner assigned before the old one acked.
	sc = teethBase("teeth-assign-before-ack", 50)
	sc.Timeline = []Action{
		{At: sec(15), Do: DoJoin, Count: 3, Group: &NodeGroup{Prefix: "j"}},
		{At: sec(30), Do: DoDrain, Target: "n2"},
	}
	out = append(out, tooth{flaw: "NodeAssignBeforeAck", node: flaw.NodeAssignBeforeAck, scenario: sc, bound: 5, want: []string{"S3"},
		why: "nodes join, then one drains: partitions move"})

	// L3: a drained worker must end with nothing.
	sc = teethBase("teeth-ignore-drain", 60)
	sc.Expect = Expect{ConvergeWithin: sec(25)}
	sc.Timeline = []Action{{At: sec(15), Do: DoDrain, Target: "n2"}}
	out = append(out, tooth{flaw: "NodeIgnoreDrain", node: flaw.NodeIgnoreDrain, scenario: sc, bound: 3, want: []string{"L2", "L3"},
		why: "drain one node, then check liveness"})

	// Determinism: the same state listed in a different order must give the same plan.
	sc = teethBase("teeth-tie-break", 50)
	sc.Timeline = []Action{
		{At: sec(15), Do: DoJoin, Count: 2, Group: &NodeGroup{Prefix: "j"}},
		{At: sec(25), Do: DoCrash, Target: "worker", For: sec(10)},
	}
	out = append(out, tooth{flaw: "AllocUnsortedTieBreak", node: flaw.AllocUnsortedTieBreak, scenario: sc, bound: 5, determinism: true,
		why:         "replay with the store's list replies shuffled differently",
		unreachable: "the coordinator sorts workers by id before it calls the allocator, so no listing order reaches the flawed tie-break (engine/alloc_test.go tests the allocator with the flaw directly)"})

	// S1: an operator resets the lease (store failover); the coordinator's next fenced
	// Apply is refused and it must step down before the next coordinator acts.
	sc = teethBase("teeth-step-down-on-fence", 80)
	sc.Timeline = []Action{
		{At: sec(10), Do: DoCrash, Target: "worker", For: sec(2), Repeat: 30, Every: sec(2.3)},
		{At: sec(15), Do: DoLeaseReset, Repeat: 8, Every: sec(7)},
	}
	out = append(out, tooth{flaw: "NodeNoStepDownOnFence", node: flaw.NodeNoStepDownOnFence, scenario: sc, bound: 40, want: []string{"S1"},
		why: "operator lease resets while partitions move (Applies in flight)"})
	return out
}

// teethTable collects the results for the summary logged at the end.
var teethTable struct {
	sync.Mutex
	rows []string
}

func TestTeeth(t *testing.T) {
	if len(teeth()) < 8 {
		t.Fatal("want at least 8 teeth")
	}
	for _, tc := range teeth() {
		t.Run(tc.flaw, func(t *testing.T) {
			t.Parallel()
			// Control: without the flaw the scenario finds nothing.
			for seed := uint64(1); seed <= 3; seed++ {
				if tc.determinism {
					d, err := CheckDeterminism(tc.scenario, Options{Seed: seed, ForceShuffle: true}, 1, 2)
					if err != nil {
						t.Fatal(err)
					}
					if !d.Identical {
						t.Fatalf("control (no flaw) diverged:\n%s", d)
					}
					continue
				}
				r, err := Run(tc.scenario, Options{Seed: seed})
				if err != nil {
					t.Fatal(err)
				}
				if r.Violation != nil {
					t.Fatalf("control (no flaw) seed %d:\n%s", seed, r.Violation)
				}
			}
			opt := Options{NodeFlaws: tc.node, StoreFlaws: tc.store}
			for seed := uint64(1); seed <= uint64(tc.bound); seed++ {
				opt.Seed = seed
				if tc.determinism {
					o := opt
					o.ForceShuffle = true
					d, err := CheckDeterminism(tc.scenario, o, 1, 2)
					if err != nil {
						t.Fatal(err)
					}
					if !d.Identical {
						t.Logf("%s caught at seed %d by the shuffled-replay check:\n%s", tc.flaw, seed, d)
						record(tc, seed, "D1 (replay diverged)")
						return
					}
					continue
				}
				r, err := Run(tc.scenario, opt)
				if err != nil {
					t.Fatal(err)
				}
				if v := r.Violation; v != nil {
					if !slices.Contains(tc.want, v.Invariant) {
						t.Fatalf("%s: seed %d found %s, want one of %v:\n%s", tc.flaw, seed, v.Invariant, tc.want, v)
					}
					t.Logf("%s caught at seed %d (%s, event #%d at %s): %s", tc.flaw, seed, v.Invariant, v.Event, fmtV(int64(v.At)), v.Message)
					record(tc, seed, v.Invariant)
					return
				}
			}
			if tc.unreachable != "" {
				t.Logf("%s not reachable through the Node: %s", tc.flaw, tc.unreachable)
				record(tc, 0, "unreachable")
				return
			}
			t.Fatalf("%s not caught within %d seeds of %s (%s)", tc.flaw, tc.bound, tc.scenario.Name, tc.why)
		})
	}
	t.Cleanup(func() {
		teethTable.Lock()
		defer teethTable.Unlock()
		caught := 0
		for _, r := range teethTable.rows {
			if !strings.Contains(r, "unreachable") {
				caught++
			}
		}
		if caught < 8 && !t.Failed() {
			t.Errorf("only %d flaws caught, want at least 8", caught)
		}
		slices.Sort(teethTable.rows)
		t.Logf("teeth: flaw | scenario | caught by | seeds needed / bound\n%s", strings.Join(teethTable.rows, "\n"))
	})
}

func record(tc tooth, seed uint64, inv string) {
	teethTable.Lock()
	defer teethTable.Unlock()
	n := fmt.Sprint(seed)
	if seed == 0 {
		n = "-"
	}
	teethTable.rows = append(teethTable.rows, fmt.Sprintf("%-26s | %-26s | %-20s | %s / %d", tc.flaw, tc.scenario.Name, inv, n, tc.bound))
}

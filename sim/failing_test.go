package sim

import (
	"testing"
	"time"
)

// failingScenario: 4 nodes, 8 partitions; the handlers of partitions 0–3 fail on n1 and
// of 4–5 on n2; a worker crash in between (as scenarios/data/failing-handlers.json).
func failingScenario(giveBackAfter int, coolDown time.Duration) *Scenario {
	return &Scenario{
		Name:      "failing",
		Duration:  sec(60),
		Nodes:     []NodeGroup{{Prefix: "n", Count: 4}},
		TaskLists: []TaskListDef{{Domain: "d", Name: "jobs", Partitions: 8}},
		Config: TimingConfig{RestartBase: Duration(100 * time.Millisecond), RestartMax: Duration(400 * time.Millisecond),
			GiveBackAfter: giveBackAfter, GiveBackWindow: sec(30), GiveBackCoolDown: Duration(coolDown)},
		Network: Network{Latency: Latency{Base: Duration(time.Millisecond), Jitter: Duration(2 * time.Millisecond)}},
		Failing: []FailingHandler{
			{Node: "n1", Domain: "d", TaskList: "jobs", Partitions: []int{0, 1, 2, 3}},
			{Node: "n2", Domain: "d", TaskList: "jobs", Partitions: []int{4, 5}, After: Duration(300 * time.Millisecond)},
		},
		Timeline: []Action{{At: sec(20), Do: DoCrash, Target: "n3", For: sec(5)}},
		Expect:   Expect{ConvergeWithin: sec(30)},
	}
}

func runFailing(t *testing.T, sc *Scenario, seeds int) (violations int, inv string, cov int) {
	t.Helper()
	for seed := 1; seed <= seeds; seed++ {
		s, err := New(sc, Options{Seed: uint64(seed)})
		if err != nil {
			t.Fatal(err)
		}
		r := s.Run()
		cov += r.Coverage["given_back"]
		if v := s.Violation(); v != nil {
			violations++
			inv = v.Invariant
		}
	}
	return violations, inv, cov
}

// With supervision and the cool-down, the cluster converges with every partition on a
// node where its handler works; without give-backs, or without the cool-down, it does not.
func TestFailingHandlersConverge(t *testing.T) {
	if v, inv, cov := runFailing(t, failingScenario(3, 10*time.Minute), 10); v != 0 || cov == 0 {
		t.Fatalf("with give-backs: %d violating seeds (last %s), %d give-backs", v, inv, cov)
	}
	if v, inv, _ := runFailing(t, failingScenario(-1, 10*time.Minute), 3); v != 3 || inv != "L2" {
		t.Fatalf("never giving back: %d of 3 seeds violate (last %q), want 3 × L2", v, inv)
	}
	if v, _, _ := runFailing(t, failingScenario(3, time.Millisecond), 3); v != 3 {
		t.Fatalf("without a cool-down: %d of 3 seeds violate, want 3", v)
	}
}

func TestFailingHandlersValidation(t *testing.T) {
	sc := failingScenario(3, time.Minute)
	sc.Failing[0].TaskList = "nope"
	if err := sc.Validate(); err == nil {
		t.Fatal("a failing handler of an unknown task list was accepted")
	}
	sc = failingScenario(3, time.Minute)
	sc.Failing[1].Node = ""
	if err := sc.Validate(); err == nil {
		t.Fatal("a failing handler without a node was accepted")
	}
}

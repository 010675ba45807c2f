package sim

import (
	"time"

	"testing"

	"pgregory.net/rapid"
)

// TestRapidFaultSchedules is a state-machine test whose actions are the faults and
// operator actions themselves (not one drawn seed): rapid draws a schedule, the
// simulator checks S1–S4 after every event and L1–L4 after a final heal, and a failing
// schedule shrinks to a minimal one (fewest, simplest actions).
func TestRapidFaultSchedules(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sc := &Scenario{
			Name:      "rapid",
			Duration:  Duration(time.Hour),
			Nodes:     []NodeGroup{{Prefix: "n", Count: 4}, {Prefix: "w", Count: 1, Capacity: 2, NoCandidate: true}},
			TaskLists: []TaskListDef{{Domain: "d", Name: "a", Partitions: 13}, {Domain: "d", Name: "b", Partitions: 4}},
			Network:   Network{Latency: Latency{Base: Duration(time.Millisecond), Jitter: Duration(2 * time.Millisecond)}},
			Expect:    Expect{NoLiveness: true},
		}
		s, err := New(sc, Options{Seed: rapid.Uint64Range(1, 3).Draw(t, "network seed")})
		if err != nil {
			t.Fatal(err)
		}
		s.RunUntil(5 * time.Second)
		node := func(t *rapid.T) string {
			return rapid.SampledFrom([]string{"n1", "n2", "n3", "n4", "w1", "coordinator", "worker"}).Draw(t, "target")
		}
		dur := func(t *rapid.T, lo, hi float64) Duration {
			return Duration(time.Duration(rapid.Float64Range(lo, hi).Draw(t, "for") * float64(time.Second)))
		}
		inject := func(t *rapid.T, a Action) {
			if err := s.Inject(a); err != nil {
				t.Fatalf("bad action %+v: %v", a, err)
			}
		}
		check := func(t *rapid.T) {
			if v := s.Violation(); v != nil {
				t.Fatalf("%s", v)
			}
		}
		t.Repeat(map[string]func(*rapid.T){
			"": check,
			"advance": func(t *rapid.T) {
				s.RunUntil(s.Now() + time.Duration(dur(t, 0.1, 12)))
			},
			"crash": func(t *rapid.T) {
				inject(t, Action{Do: DoCrash, Target: node(t), For: dur(t, 0, 15)})
			},
			"pause": func(t *rapid.T) {
				inject(t, Action{Do: DoPause, Target: node(t), For: dur(t, 0.1, 15)})
			},
			"pause-before-write": func(t *rapid.T) {
				inject(t, Action{Do: DoPause, Target: "coordinator", Hold: "apply", For: dur(t, 0.1, 10)})
			},
			"partition": func(t *rapid.T) {
				inject(t, Action{Do: DoPartition, Target: node(t), For: dur(t, 0.1, 15), Buffer: rapid.Bool().Draw(t, "buffer")})
			},
			"store outage": func(t *rapid.T) {
				inject(t, Action{Do: DoStoreOutage, For: dur(t, 0.1, 10)})
			},
			"latency": func(t *rapid.T) {
				inject(t, Action{Do: DoLatency, For: dur(t, 0.5, 10), Latency: &Latency{Base: dur(t, 0, 0.8), Jitter: dur(t, 0, 0.3)}})
			},
			"loss": func(t *rapid.T) {
				inject(t, Action{Do: DoLoss, For: dur(t, 0.5, 10), RequestLoss: rapid.Float64Range(0, 0.5).Draw(t, "req"), ReplyLoss: rapid.Float64Range(0, 0.5).Draw(t, "rep")})
			},
			"clock drift within bound": func(t *rapid.T) {
				d := rapid.Float64Range(-0.009, 0.009).Draw(t, "drift")
				inject(t, Action{Do: DoClock, Target: node(t), Drift: &d, Jump: dur(t, 0, 5)})
			},
			"drain": func(t *rapid.T) {
				do := rapid.SampledFrom([]string{DoDrain, DoUndrain}).Draw(t, "do")
				inject(t, Action{Do: do, Target: node(t)})
			},
			"join": func(t *rapid.T) {
				inject(t, Action{Do: DoJoin, Count: rapid.IntRange(1, 3).Draw(t, "count"), Group: &NodeGroup{Prefix: "j"}})
			},
			"leave": func(t *rapid.T) {
				inject(t, Action{Do: DoLeave, Target: rapid.SampledFrom([]string{"n3", "n4", "w1"}).Draw(t, "target")})
			},
			"resize": func(t *rapid.T) {
				tl := TaskListDef{Domain: "d", Name: rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "tasklist"), Partitions: rapid.IntRange(1, 30).Draw(t, "partitions")}
				inject(t, Action{Do: DoPutTaskList, TaskList: &tl})
			},
			"delete tasklist": func(t *rapid.T) {
				inject(t, Action{Do: DoDelTaskList, TaskList: &TaskListDef{Domain: "d", Name: rapid.SampledFrom([]string{"b", "c"}).Draw(t, "tasklist")}})
			},
			"lease reset": func(t *rapid.T) {
				inject(t, Action{Do: DoLeaseReset})
			},
		})
		// Liveness: faults stop, the core heals, the cluster must converge.
		if v := s.HealAndCheck(40 * time.Second); v != nil {
			t.Fatalf("after the heal:\n%s", v)
		}
	})
}

package sim

import "time"

func sec(s float64) Duration { return Duration(time.Duration(s * float64(time.Second))) }

// base is a small cluster for the tests here: 5 nodes, two task lists whose sizes leave
// remainders (so allocation has ties to break), a fast network, no liveness phase.
func base(name string, dur float64) *Scenario {
	return &Scenario{
		Name:      name,
		Duration:  sec(dur),
		Nodes:     []NodeGroup{{Prefix: "n", Count: 5}},
		TaskLists: []TaskListDef{{Domain: "d", Name: "a", Partitions: 23}, {Domain: "d", Name: "b", Partitions: 7}},
		Network:   Network{Latency: Latency{Base: Duration(time.Millisecond), Jitter: Duration(2 * time.Millisecond)}},
		Expect:    Expect{NoLiveness: true},
	}
}

package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/helixcoord/helix/scenarios"
	"github.com/helixcoord/helix/sim"
)

// mixedFaults is the built-in mixed-fault scenario (1,000 partitions, crash, pause,
// partition, latency spike, lost replies, drain, resize over two minutes) with n nodes.
func mixedFaults(b testing.TB, n int) *sim.Scenario {
	sc, err := scenarios.Builtin("mixed-faults")
	if err != nil {
		b.Fatal(err)
	}
	sc.Nodes[0].Count = n
	if n < 10 {
		// the scenario drains n7
		for i := range sc.Timeline {
			if sc.Timeline[i].Target == "n7" {
				sc.Timeline[i].Target = "n2"
			}
		}
	}
	return sc
}

// BenchmarkSimSpeed reports simulated seconds per wall second (one core, one seed per
// iteration) for 5, 50 and 500 nodes with 1,000 partitions under mixed faults.
func BenchmarkSimSpeed(b *testing.B) {
	for _, n := range []int{5, 50, 500} {
		b.Run(fmt.Sprintf("nodes=%d/partitions=1000", n), func(b *testing.B) {
			sc := mixedFaults(b, n)
			var virt time.Duration
			var events uint64
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				r, err := sim.Run(sc, sim.Options{Seed: uint64(i + 1)})
				if err != nil {
					b.Fatal(err)
				}
				if !r.Passed {
					b.Fatalf("seed %d: %v", i+1, r.Violation)
				}
				virt += r.Virtual
				events += r.Events
			}
			wall := time.Since(start)
			b.ReportMetric(virt.Seconds()/wall.Seconds(), "sim-s/wall-s")
			b.ReportMetric(float64(events)/wall.Seconds(), "events/s")
		})
	}
}

// BenchmarkSeedsPerMinute: how many seeds of a 2-minute scenario one core runs per
// minute (the mixed-fault scenario with 50 nodes, and the 8-node swarm stretched to 2
// minutes).
func BenchmarkSeedsPerMinute(b *testing.B) {
	sw, err := scenarios.Builtin("swarm")
	if err != nil {
		b.Fatal(err)
	}
	sw.Duration = sim.Duration(120 * time.Second)
	sw.Swarm.Until = sim.Duration(80 * time.Second)
	for _, c := range []struct {
		name string
		sc   *sim.Scenario
	}{{"mixed-faults-50-nodes", mixedFaults(b, 50)}, {"swarm-8-nodes", sw}} {
		b.Run(c.name, func(b *testing.B) {
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := sim.Run(c.sc, sim.Options{Seed: uint64(i + 1)}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Minutes(), "seeds/min")
		})
	}
}

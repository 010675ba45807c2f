package bench

import (
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// Allocator benchmarks: plan time and allocations per size (partitions × workers), each
// from scratch, after one worker joins and after one leaves a settled cluster. Task lists
// have 100 partitions each (except where named otherwise), so at 10,000 workers most
// workers get 0 or 1 partition of a task list: the shape where balancing each task list
// alone would pile every remainder on the same workers, and where a worker that joins
// gets its share only if the cluster-wide level of the rule is kept.
//
// Custom metrics: moves/op (partitions that change owner), moves/min (moves ÷ the fewest
// any plan meeting both levels of balance needs; 1 is optimal, and anything else fails
// the benchmark) and spread (max − min over workers of partitions ÷ capacity,
// cluster-wide).

type allocSize struct {
	name       string
	partitions int // total
	perList    int // partitions per task list
	workers    int
	weights    []int // capacities, worker i gets weights[i % len]; nil: all 1
}

var allocSizes = []allocSize{
	{"1kx10", 1_000, 100, 10, nil},
	{"10kx100", 10_000, 100, 100, nil},
	{"100kx1k", 100_000, 100, 1_000, nil},
	{"100kx10k", 100_000, 100, 10_000, nil},
	{"1Mx10k", 1_000_000, 100, 10_000, nil},
	{"1000tl_x100_x500", 100_000, 100, 500, nil},
	// The shapes the two-level rule is for: many small task lists.
	{"25000tl_x4_x1k", 100_000, 4, 1_000, nil},
	{"100000tl_x4_x10k", 400_000, 4, 10_000, nil},
	{"1000tl_x100_x500_w124", 100_000, 100, 500, []int{1, 2, 4}},
}

func workerID(i int) string { return fmt.Sprintf("worker-%05d", i) }

func (s allocSize) worker(i int) engine.Worker {
	c := 1
	if len(s.weights) > 0 {
		c = s.weights[i%len(s.weights)]
	}
	return engine.Worker{ID: workerID(i), Capacity: c}
}

func allocCluster(s allocSize) engine.PlanInput {
	var in engine.PlanInput
	for i := 0; i < s.partitions/s.perList; i++ {
		in.TaskLists = append(in.TaskLists, engine.TaskList{Domain: "bench", Name: fmt.Sprintf("tl-%06d", i), Partitions: s.perList})
	}
	for i := 0; i < s.workers; i++ {
		in.Workers = append(in.Workers, s.worker(i))
	}
	return in
}

// settle returns the rows of the settled assignment of in. Their strings are copies,
// as rows read from a store are: sharing memory with the worker ids would let every
// string comparison succeed on the pointer alone.
func settle(in engine.PlanInput) []engine.Assignment {
	targets := engine.PlanAssignments(in).Targets()
	rows := make([]engine.Assignment, len(targets))
	for i, pl := range targets {
		id := engine.PartitionID{Domain: strings.Clone(pl.Partition.Domain), TaskList: strings.Clone(pl.Partition.TaskList), Partition: pl.Partition.Partition}
		rows[i] = engine.Assignment{Partition: id, Owner: strings.Clone(pl.Owner), State: engine.Assigned, Generation: 1}
	}
	return rows
}

// settled is settle's rows and the plan that made them.
func settled(in engine.PlanInput) ([]engine.Assignment, *engine.Plan) {
	p := engine.PlanAssignments(in)
	p.Moves, p.Assign, p.Release = nil, nil, nil // as the coordinator keeps it
	return settle(in), &p
}

// minMoves is a lower bound of the fewest moves any plan meeting both levels of balance
// needs, computed here from counts rather than by the allocator: every partition without
// an eligible holder moves, and every partition a worker holds above its floor of a task
// list moves, less one per ceiling ("extra") slot kept by such a worker. The extras kept
// are at most, per task list, min(its extras, its workers above floor) and, per worker,
// its cluster-wide extras lo = ⌊P·w/W⌋ − Σ floors, plus one for at most K of them
// (K = extras in all − Σ lo). A plan that meets the bound is optimal, so moves/min = 1
// proves it.
func minMoves(in engine.PlanInput) int {
	caps := map[string]int{}
	capSum := 0
	classes := map[int]int{} // capacity → number of eligible workers
	for _, w := range in.Workers {
		if !w.Draining {
			caps[w.ID] = w.Capacity
			capSum += w.Capacity
			classes[w.Capacity]++
		}
	}
	// held[offset of the task list + partition] is the eligible holder, "" if none.
	offset := map[[2]string]int{}
	n := 0
	for _, t := range in.TaskLists {
		offset[[2]string{t.Domain, t.Name}] = n
		n += t.Partitions
	}
	held := make([]string, n)
	for _, r := range in.Current {
		if _, ok := caps[r.Owner]; ok && r.State == engine.Assigned {
			held[offset[[2]string{r.Partition.Domain, r.Partition.TaskList}]+r.Partition.Partition] = r.Owner
		}
	}
	floors := map[int]int{} // capacity → Σ floors over task lists
	sticky := map[string]int{}
	total, extrasAll, byT := 0, 0, 0
	for _, t := range in.TaskLists {
		off := offset[[2]string{t.Domain, t.Name}]
		count := map[string]int{}
		for k := 0; k < t.Partitions; k++ {
			if h := held[off+k]; h != "" {
				count[h]++
			} else {
				total++
			}
		}
		extras := t.Partitions
		for c, n := range classes {
			extras -= n * (t.Partitions * c / capSum)
			floors[c] += t.Partitions * c / capSum
		}
		extrasAll += extras
		above := 0
		for id, n := range count {
			c := caps[id]
			if floor := t.Partitions * c / capSum; n > floor {
				total += n - floor
				if t.Partitions*c%capSum != 0 {
					above++
					sticky[id]++
				}
			}
		}
		byT += min(extras, above)
	}
	// Cluster-wide: a worker of capacity c takes between lo[c] and hi[c] extras in all.
	lo, hi := map[int]int{}, map[int]int{}
	K := extrasAll
	for c, count := range classes {
		lo[c] = n*c/capSum - floors[c]
		hi[c] = (n*c+capSum-1)/capSum - floors[c]
		K -= count * lo[c]
	}
	direct, over := 0, 0
	for id, st := range sticky {
		c := caps[id]
		direct += min(st, lo[c])
		if st > lo[c] && hi[c] > lo[c] {
			over++
		}
	}
	return total - min(byT, direct+min(over, K))
}

func benchPlan(b *testing.B, in engine.PlanInput) {
	least := minMoves(in)
	// One plan before the timer: the first plan of a process grows the allocator's pooled
	// scratch memory, which a coordinator, planning every tick, pays once. (With few
	// iterations, as at 1M partitions, that first plan would otherwise be most of the
	// measurement.) Then collect the setup's garbage, so that the timed plans do not pay
	// for it.
	engine.PlanAssignments(in)
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	var p engine.Plan
	for i := 0; i < b.N; i++ {
		p = engine.PlanAssignments(in)
	}
	reportCPU(b, cpu0)
	b.StopTimer()
	ratio := 1.0
	if least > 0 {
		ratio = float64(len(p.Moves)) / float64(least)
	}
	if len(p.Moves) != least {
		b.Fatalf("%d moves, the minimum is %d", len(p.Moves), least)
	}
	if p.Spread > 1000 {
		b.Fatalf("cluster-wide spread %.3f > 1", float64(p.Spread)/1000)
	}
	b.ReportMetric(float64(len(p.Moves)), "moves/op")
	b.ReportMetric(ratio, "moves/min")
	b.ReportMetric(float64(p.Spread)/1000, "spread")
}

// reportCPU reports the process's CPU time per op since cpu0 (a cpuTime reading). The
// machine may be shared: CPU time (all threads, so the garbage collector's share counts)
// is the number to hold against a one-core budget when the wall-clock ns/op is inflated
// by waiting for a core.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkAlloc(b *testing.B) {
	for _, s := range allocSizes {
		b.Run(s.name+"/scratch", func(b *testing.B) {
			benchPlan(b, allocCluster(s))
		})
		// A coordinator passes its last plan back (PlanInput.Previous): here the plan that
		// settled the cluster before the join or leave.
		b.Run(s.name+"/join", func(b *testing.B) {
			in := allocCluster(s)
			in.Current, in.Previous = settled(in)
			in.Workers = append(in.Workers, s.worker(s.workers))
			benchPlan(b, in)
		})
		b.Run(s.name+"/leave", func(b *testing.B) {
			in := allocCluster(s)
			in.Current, in.Previous = settled(in)
			in.Workers = in.Workers[1:]
			benchPlan(b, in)
		})
	}
}

// The benchmark inputs must mean what their names say: a settled cluster that a worker
// joins or leaves, planned with the fewest moves. Checked at the smallest size, so that
// `go test ./bench/` catches a broken benchmark without running it.
func TestAllocBenchInputs(t *testing.T) {
	s := allocSizes[0]
	in := allocCluster(s)
	if p := engine.PlanAssignments(in); len(p.Moves) != s.partitions || minMoves(in) != s.partitions {
		t.Fatalf("scratch: %d moves, minimum %d; want %d", len(p.Moves), minMoves(in), s.partitions)
	}
	in.Current = settle(in)
	if p := engine.PlanAssignments(in); len(p.Moves) != 0 || minMoves(in) != 0 {
		t.Fatalf("settled: %d moves, minimum %d; want 0", len(p.Moves), minMoves(in))
	}
	join := in
	join.Workers = append(join.Workers[:len(join.Workers):len(join.Workers)], engine.Worker{ID: workerID(s.workers), Capacity: 1})
	// 100 per task list over 11 workers: the new one takes 9 of each of the 10 lists.
	if p, m := engine.PlanAssignments(join), minMoves(join); len(p.Moves) != 90 || m != 90 {
		t.Fatalf("join: %d moves, minimum %d; want 90", len(p.Moves), m)
	}
	leave := in
	leave.Workers = in.Workers[1:]
	if p, m := engine.PlanAssignments(leave), minMoves(leave); len(p.Moves) != 100 || m != 100 {
		t.Fatalf("leave: %d moves, minimum %d; want the 100 of the worker that left", len(p.Moves), m)
	}

	// Many small task lists: 250 × 4 on 100 workers, each holding 10. A joining worker
	// gets its cluster-wide share (1000/101: 9 or 10) although every task list is
	// balanced already, and the minimum is exactly what it receives.
	small := allocSize{"250tl_x4_x100", 1_000, 4, 100, nil}
	in = allocCluster(small)
	in.Current = settle(in)
	join = in
	join.Workers = append(join.Workers[:len(join.Workers):len(join.Workers)], small.worker(small.workers))
	p, m := engine.PlanAssignments(join), minMoves(join)
	got := 0
	for _, m := range p.ExpandMoves(p.Moves) {
		if m.To == workerID(small.workers) {
			got++
		}
	}
	if len(p.Moves) != m || got != len(p.Moves) || got < 9 || p.Spread > 1000 {
		t.Fatalf("small task lists, join: %d moves (%d to the new worker), minimum %d, spread %d; want the minimum, all to the new worker, at least 9, spread ≤ 1000", len(p.Moves), got, m, p.Spread)
	}
}

// BenchmarkAllocFloor measures what any allocator pays at a size before deciding
// anything: read every row (its task list's names, number, state, owner and target:
// `scan`), and look every row's owner up in a map of worker ids (`lookups`). It shows how
// much of BenchmarkAlloc's time is the machine's price for reading the input.
func BenchmarkAllocFloor(b *testing.B) {
	for _, s := range []allocSize{allocSizes[3], allocSizes[4]} {
		in := allocCluster(s)
		in.Current = settle(in)
		ids := make(map[string]int32, len(in.Workers))
		for i, w := range in.Workers {
			ids[w.ID] = int32(i)
		}
		b.Run(s.name+"/scan", func(b *testing.B) {
			runtime.GC()
			b.ResetTimer()
			cpu0 := cpuTime()
			sum := 0
			for i := 0; i < b.N; i++ {
				lastD, lastN := "", ""
				for k := range in.Current {
					r := &in.Current[k]
					if r.Partition.Domain != lastD || r.Partition.TaskList != lastN {
						lastD, lastN = r.Partition.Domain, r.Partition.TaskList
						sum++
					}
					sum += r.Partition.Partition + len(r.Owner) + int(r.State) + len(r.Target)
				}
			}
			reportCPU(b, cpu0)
			if sum < 0 {
				b.Fatal("impossible")
			}
		})
		b.Run(s.name+"/lookups", func(b *testing.B) {
			runtime.GC()
			b.ResetTimer()
			cpu0 := cpuTime()
			var sum int64
			for i := 0; i < b.N; i++ {
				for k := range in.Current {
					sum += int64(ids[in.Current[k].Owner])
				}
			}
			reportCPU(b, cpu0)
			if sum < 0 {
				b.Fatal("impossible")
			}
		})
	}
}

// Inputs this large take the allocator's fast path (not the exact solver the engine's
// small property tests exercise). A join and a leave, throttled to 7 releases at a time
// and applied round after round as a coordinator would (every release acknowledged
// before the next plan, the last plan passed back as PlanInput.Previous), must reach the target the first plan named in the fewest
// rounds the throttle allows, moving only the first plan's moves.
func TestAllocThrottledRoundsFastPath(t *testing.T) {
	for _, s := range []allocSize{
		{"250tl_x4_x100", 1_000, 4, 100, nil},
		{"100tl_x100_x100", 10_000, 100, 100, nil},
		{"300tl_x10_x60_w124", 3_000, 10, 60, []int{1, 2, 4}},
	} {
		base := allocCluster(s)
		base.Current = settle(base)
		for _, c := range []string{"join", "leave"} {
			in := base
			if c == "join" {
				in.Workers = append(in.Workers[:len(in.Workers):len(in.Workers)], s.worker(s.workers))
			} else {
				in.Workers = in.Workers[1:]
			}
			in.MaxInFlight = 7
			first := engine.PlanAssignments(in)
			in.Previous = &first // as the coordinator passes its last plan back
			want := first.Targets()
			rows := map[engine.PartitionID]engine.Assignment{}
			for _, r := range in.Current {
				rows[r.Partition] = r
			}
			rounds := 0
			moved := map[engine.PartitionID]bool{}
			for ; rounds < 1000; rounds++ {
				in.Current = in.Current[:0]
				for _, pl := range want {
					if r, ok := rows[pl.Partition]; ok {
						in.Current = append(in.Current, r)
					}
				}
				p := engine.PlanAssignments(in)
				in.Previous = &p
				if len(p.Moves) == 0 {
					break
				}
				for _, m := range p.ExpandMoves(p.Assign) {
					rows[m.Partition] = engine.Assignment{Partition: m.Partition, Owner: m.To, State: engine.Assigned}
					moved[m.Partition] = true
				}
				for _, m := range p.ExpandMoves(p.Release) {
					// Released and acknowledged at once: unassigned, the target kept as the hint.
					rows[m.Partition] = engine.Assignment{Partition: m.Partition, State: engine.Unassigned, Target: m.To}
					moved[m.Partition] = true
				}
			}
			got := engine.PlanAssignments(in).Targets()
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%s/%s: settled target differs from the first plan's at %v: %q, first plan said %q", s.name, c, want[i].Partition, got[i].Owner, want[i].Owner)
				}
			}
			if len(moved) != len(first.Moves) {
				t.Fatalf("%s/%s: %d partitions moved over %d rounds, the first plan had %d moves", s.name, c, len(moved), rounds, len(first.Moves))
			}
		}
	}
}

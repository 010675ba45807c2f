package engine

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// Property tests of the allocator's six rules over arbitrary inputs: owners that are
// gone, partitions listed twice, rows of unknown task lists or out-of-range partitions,
// Releasing and Unassigned rows with and without targets, draining workers, duplicate
// workers and task lists. checkPlan (alloc_test.go) recomputes rules 1–3 and the throttle
// bounds independently.

var (
	genWorkerIDs = []string{"w0", "w1", "w2", "w3", "w4", "w5", "w6"}
	genOwnerIDs  = append(slices.Clone(genWorkerIDs), "", "gone1", "gone2")
	genDomains   = []string{"d0", "d1"}
	genNames     = []string{"t0", "t1", "t2"}
)

func genWorker(t *rapid.T) Worker {
	return Worker{
		ID:       rapid.SampledFrom(genWorkerIDs).Draw(t, "id"),
		Capacity: rapid.IntRange(1, 4).Draw(t, "capacity"),
		Draining: rapid.IntRange(0, 4).Draw(t, "draining") == 0,
	}
}

func genTaskList(t *rapid.T) TaskList {
	return TaskList{
		Domain:     rapid.SampledFrom(genDomains).Draw(t, "domain"),
		Name:       rapid.SampledFrom(genNames).Draw(t, "name"),
		Partitions: rapid.IntRange(0, 14).Draw(t, "partitions"),
	}
}

func genRow(t *rapid.T, states []PartitionState) Assignment {
	return Assignment{
		Partition: PartitionID{
			Domain:    rapid.SampledFrom(genDomains).Draw(t, "domain"),
			TaskList:  rapid.SampledFrom(append(slices.Clone(genNames), "unknown")).Draw(t, "tasklist"),
			Partition: rapid.IntRange(-1, 15).Draw(t, "partition"),
		},
		Owner:  rapid.SampledFrom(genOwnerIDs).Draw(t, "owner"),
		State:  rapid.SampledFrom(states).Draw(t, "state"),
		Target: rapid.SampledFrom(genOwnerIDs).Draw(t, "target"),
	}
}

var allStates = []PartitionState{Unassigned, Assigned, Releasing, Deleted}

func genInput(t *rapid.T, states []PartitionState) PlanInput {
	return PlanInput{
		TaskLists:            rapid.SliceOfN(rapid.Custom(genTaskList), 0, 5).Draw(t, "tasklists"),
		Workers:              rapid.SliceOfN(rapid.Custom(genWorker), 0, 7).Draw(t, "workers"),
		Current:              rapid.SliceOfN(rapid.Custom(func(t *rapid.T) Assignment { return genRow(t, states) }), 0, 40).Draw(t, "current"),
		MaxInFlight:          rapid.IntRange(0, 4).Draw(t, "maxInFlight"),
		MaxInFlightPerWorker: rapid.IntRange(0, 3).Draw(t, "maxInFlightPerWorker"),
	}
}

// genScenario is what a coordinator meets: a settled assignment, then workers join,
// leave, drain or change capacity, and some rows are mid-handoff. It makes plans with
// many moves from several live owners, which the throttle rules need.
func genScenario(t *rapid.T, midHandoff bool) PlanInput {
	ids := genWorkerIDs[:rapid.IntRange(1, len(genWorkerIDs)-2).Draw(t, "before")]
	var before PlanInput
	for _, id := range ids {
		before.Workers = append(before.Workers, wk(id, rapid.IntRange(1, 3).Draw(t, "capacity")))
	}
	for i := rapid.IntRange(1, 4).Draw(t, "tasklists"); i > 0; i-- {
		before.TaskLists = append(before.TaskLists, tl("d0", fmt.Sprintf("t%d", i), rapid.IntRange(1, 24).Draw(t, "partitions")))
	}
	after := PlanInput{
		TaskLists:            before.TaskLists,
		Current:              asCurrent(PlanAssignments(before)),
		MaxInFlight:          rapid.IntRange(0, 5).Draw(t, "maxInFlight"),
		MaxInFlightPerWorker: rapid.IntRange(0, 3).Draw(t, "maxInFlightPerWorker"),
	}
	for _, w := range before.Workers {
		switch rapid.IntRange(0, 9).Draw(t, "fate") {
		case 0, 1: // leaves (dies)
		case 2, 3:
			w.Draining = true
			after.Workers = append(after.Workers, w)
		case 4:
			w.Capacity = rapid.IntRange(1, 4).Draw(t, "newCapacity")
			after.Workers = append(after.Workers, w)
		default:
			after.Workers = append(after.Workers, w)
		}
	}
	for _, id := range genWorkerIDs[len(ids):] {
		if rapid.Bool().Draw(t, "joins") {
			after.Workers = append(after.Workers, wk(id, rapid.IntRange(1, 3).Draw(t, "capacity")))
		}
	}
	if midHandoff {
		for i := range after.Current {
			row := &after.Current[i]
			switch rapid.IntRange(0, 9).Draw(t, "handoff") {
			case 0:
				row.State, row.Target = Releasing, rapid.SampledFrom(genOwnerIDs).Draw(t, "target")
			case 1:
				row.State, row.Owner, row.Target = Unassigned, "", rapid.SampledFrom(genOwnerIDs).Draw(t, "target")
			}
		}
	}
	return after
}

// Rules 1, 2, 3 and the per-plan part of 6.
func TestAllocPropRules(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, allStates)
		if rapid.Bool().Draw(t, "scenario") {
			in = genScenario(t, true)
		}
		if err := checkPlan(in, PlanAssignments(in)); err != nil {
			t.Fatal(err)
		}
	})
}

func shuffled[T any](t *rapid.T, s []T, label string) []T {
	out := slices.Clone(s)
	for i := len(out) - 1; i > 0; i-- {
		j := rapid.IntRange(0, i).Draw(t, label)
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Rule 4: the same input with its lists shuffled gives an identical plan.
func TestAllocPropDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, allStates)
		if rapid.Bool().Draw(t, "scenario") {
			in = genScenario(t, true)
		}
		want := PlanAssignments(in)
		sh := in
		sh.TaskLists = shuffled(t, in.TaskLists, "tl")
		sh.Workers = shuffled(t, in.Workers, "w")
		sh.Current = shuffled(t, in.Current, "row")
		if got := PlanAssignments(sh); !reflect.DeepEqual(got, want) {
			t.Fatalf("shuffled input plans differently:\n got %+v\nwant %+v", got, want)
		}
	})
}

// Rule 5: planning again from the target moves nothing.
func TestAllocPropStable(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, allStates)
		if rapid.Bool().Draw(t, "scenario") {
			in = genScenario(t, true)
		}
		p := PlanAssignments(in)
		again := in
		again.Current = asCurrent(p)
		q := PlanAssignments(again)
		if len(q.Moves)+len(q.Assign)+len(q.Release) != 0 {
			t.Fatalf("re-planning from the target: moves %v", q.Moves)
		}
		if !reflect.DeepEqual(q.Targets(), p.Targets()) {
			t.Fatalf("re-planning from the target changed it")
		}
	})
}

// From scratch with equal capacities the cluster-wide spread is at most one partition:
// the extras of each task list go to the workers with the fewest so far.
func TestAllocPropSpreadFromScratch(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nw := rapid.IntRange(1, 12).Draw(t, "workers")
		var in PlanInput
		for i := 0; i < nw; i++ {
			in.Workers = append(in.Workers, wk(fmt.Sprintf("w%02d", i), 1))
		}
		nt := rapid.IntRange(1, 20).Draw(t, "tasklists")
		for i := 0; i < nt; i++ {
			in.TaskLists = append(in.TaskLists, tl("d", fmt.Sprintf("t%02d", i), rapid.IntRange(1, 15).Draw(t, "p")))
		}
		p := PlanAssignments(in)
		if p.Spread > 1000 {
			t.Fatalf("spread %d > 1000 (one partition)", p.Spread)
		}
	})
}

// applyRound applies a plan to the rows as a coordinator would: assign the free ones,
// start the releases; then the owners acknowledge the releases for which ack says so.
func applyRound(rows map[PartitionID]Assignment, p Plan, ack func(PartitionID) bool) {
	for _, m := range p.ExpandMoves(p.Assign) {
		rows[m.Partition] = Assignment{Partition: m.Partition, Owner: m.To, State: Assigned}
	}
	for _, m := range p.ExpandMoves(p.Release) {
		r := rows[m.Partition]
		r.State, r.Target = Releasing, m.To
		rows[m.Partition] = r
	}
	// Sorted, so that the ack decisions drawn by rapid replay in the same order.
	for _, r := range rowsOf(rows) {
		if r.State == Releasing && ack(r.Partition) {
			rows[r.Partition] = Assignment{Partition: r.Partition, State: Unassigned, Target: r.Target}
		}
	}
}

func rowsOf(m map[PartitionID]Assignment) []Assignment {
	var out []Assignment
	for _, r := range m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(x, y Assignment) int { return ComparePartitions(x.Partition, y.Partition) })
	return out
}

// Rule 6: round after round, with every release acknowledged before the next plan, the
// target is reached in exactly the fewest rounds the throttle allows:
// max(⌈M/MaxInFlight⌉, max over workers ⌈m_w/MaxInFlightPerWorker⌉) rounds of releases,
// where M moves (m_w from worker w) must leave a live owner. No row is released twice.
func TestAllocPropThrottledRounds(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { checkThrottledRounds(t, PlanAssignments) })
}

// Rule 6 through the fast path (greedy sticky cells, augmenting paths, need-ordered
// completion), which inputs over exactCells cells take: its ties are not broken by one
// fixed order as exactExtras' are, so what keeps the target from drifting is the
// previous plan passed back (PlanInput.Previous).
func TestAllocPropThrottledRoundsFastPath(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		checkThrottledRounds(t, func(in PlanInput) Plan {
			a := allocator{forceFast: true}
			return a.plan(in)
		})
	})
}

// checkThrottledRounds plans round after round with plan, as a coordinator does, and
// checks that the first plan's target is reached, moving only what the first plan
// moved, in the fewest rounds the throttle allows.
func checkThrottledRounds(t *rapid.T, plan func(PlanInput) Plan) {
	var in PlanInput
	if rapid.Bool().Draw(t, "scenario") {
		in = genScenario(t, false)
	} else {
		in = genInput(t, []PartitionState{Unassigned, Assigned, Deleted})
	}
	r := normalize(in)
	rows := map[PartitionID]Assignment{}
	for id, row := range r.rows {
		rows[id] = row
	}
	first := plan(in)
	perW := map[string]int{}
	m := 0
	for _, mv := range first.ExpandMoves(first.Moves) {
		if r.isLive(mv.From) {
			m++
			perW[mv.From]++
		}
	}
	want := 0
	if m > 0 {
		want = 1
		if in.MaxInFlight > 0 {
			want = max(want, (m+in.MaxInFlight-1)/in.MaxInFlight)
		}
		if in.MaxInFlightPerWorker > 0 {
			for _, c := range perW {
				want = max(want, (c+in.MaxInFlightPerWorker-1)/in.MaxInFlightPerWorker)
			}
		}
	}
	releaseRounds := 0
	cur := in
	prev := first
	for round := 0; ; round++ {
		if round > 100 {
			t.Fatalf("not settled after 100 rounds")
		}
		cur.Current = rowsOf(rows)
		cur.Previous = &prev
		p := plan(cur)
		if err := checkPlan(cur, p); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(p.Moves) == 0 {
			// No drift: the target announced by the first plan is the one reached.
			if !reflect.DeepEqual(p.Targets(), first.Targets()) {
				t.Fatalf("round %d: settled target differs from the first plan's:\n got %v\nwant %v", round, p.Targets(), first.Targets())
			}
			break
		}
		if len(p.Release) > 0 {
			releaseRounds++
		}
		applyRound(rows, p, func(PartitionID) bool { return true })
		prev = p
	}
	if releaseRounds != want {
		t.Fatalf("%d rounds of releases, the throttle allows %d (M=%d, per worker %v)", releaseRounds, want, m, perW)
	}
}

// Rule 6 with acknowledgements that arrive late, in any order: every plan stays within
// the throttle (checkPlan), never re-releases a Releasing row, and once acks flow the
// assignment settles. Each plan gets the one before as Previous, as the coordinator's do.
func TestAllocPropThrottledLateAcks(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { checkLateAcks(t, PlanAssignments) })
}

// The same through the fast path, where the previous plan's extras are reused.
func TestAllocPropThrottledLateAcksFastPath(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		checkLateAcks(t, func(in PlanInput) Plan {
			a := allocator{forceFast: true}
			return a.plan(in)
		})
	})
}

func checkLateAcks(t *rapid.T, plan func(PlanInput) Plan) {
	in := genInput(t, allStates)
	if rapid.Bool().Draw(t, "scenario") {
		in = genScenario(t, true)
	}
	r := normalize(in)
	rows := map[PartitionID]Assignment{}
	for id, row := range r.rows {
		rows[id] = row
	}
	cur := in
	for round := 0; ; round++ {
		if round > 150 {
			t.Fatalf("not settled after 150 rounds")
		}
		cur.Current = rowsOf(rows)
		p := plan(cur)
		if err := checkPlan(cur, p); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, m := range p.ExpandMoves(p.Release) {
			if rows[m.Partition].State == Releasing {
				t.Fatalf("round %d: %v released again while Releasing", round, m.Partition)
			}
		}
		if len(p.Moves) == 0 && p.InFlight == 0 {
			break
		}
		// For the first rounds acks are random; later all arrive (faults stop).
		late := round < 20
		applyRound(rows, p, func(id PartitionID) bool {
			return !late || rapid.Bool().Draw(t, "ack")
		})
		// Owners that are gone never ack; their rows are assigned by the next plan.
		cur.Previous = &p
	}
}

// A previous plan that does not fit the input (another cluster's, one from before
// workers joined, left or drained, or task lists changed) costs nothing: the plan still
// meets every rule, on both paths, and is the same for any order of the input.
func TestAllocPropStalePrevious(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, allStates)
		if rapid.Bool().Draw(t, "scenario") {
			in = genScenario(t, true)
		}
		other := genInput(t, allStates)
		if rapid.Bool().Draw(t, "otherScenario") {
			other = genScenario(t, true)
		}
		if rapid.Bool().Draw(t, "sameTaskLists") {
			other.TaskLists = in.TaskLists
		}
		if rapid.Bool().Draw(t, "sameWorkers") {
			other.Workers = in.Workers
		}
		for _, fast := range []bool{false, true} {
			plan := func(in PlanInput) Plan {
				a := allocator{forceFast: fast}
				return a.plan(in)
			}
			prev := plan(other)
			in.Previous = &prev
			p := plan(in)
			if err := checkPlan(in, p); err != nil {
				t.Fatalf("fast path %v: %v", fast, err)
			}
			sh := in
			sh.TaskLists = shuffled(t, in.TaskLists, "tl")
			sh.Workers = shuffled(t, in.Workers, "w")
			sh.Current = shuffled(t, in.Current, "row")
			if q := plan(sh); !reflect.DeepEqual(q, p) {
				t.Fatalf("fast path %v: shuffled input plans differently", fast)
			}
			again := in
			again.Current = asCurrent(p)
			again.Previous = &p
			if q := plan(again); len(q.Moves) != 0 {
				t.Fatalf("fast path %v: re-planning from the target moves %v", fast, q.Moves)
			}
		}
	})
}

// The small generators above never fill more than one 64-bit word of a capacity class's
// bitsets; this one uses up to 200 workers, so classes span several words, with task
// lists both smaller and larger than the worker count.
func TestAllocPropManyWorkers(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nw := rapid.IntRange(1, 200).Draw(t, "workers")
		var before PlanInput
		for i := 0; i < nw; i++ {
			before.Workers = append(before.Workers, wk(fmt.Sprintf("w%03d", i), rapid.IntRange(1, 3).Draw(t, "capacity")))
		}
		for i := rapid.IntRange(1, 8).Draw(t, "tasklists"); i > 0; i-- {
			before.TaskLists = append(before.TaskLists, tl("d", fmt.Sprintf("t%d", i), rapid.IntRange(0, 400).Draw(t, "partitions")))
		}
		in := before
		if rapid.Bool().Draw(t, "settled") {
			in.Current = asCurrent(PlanAssignments(before))
		}
		in.Workers = nil
		for _, w := range before.Workers {
			switch rapid.IntRange(0, 19).Draw(t, "fate") {
			case 0: // leaves
			case 1:
				w.Draining = true
				in.Workers = append(in.Workers, w)
			default:
				in.Workers = append(in.Workers, w)
			}
		}
		for i := rapid.IntRange(0, 70).Draw(t, "join"); i > 0; i-- {
			in.Workers = append(in.Workers, wk(fmt.Sprintf("x%03d", i), rapid.IntRange(1, 3).Draw(t, "capacity")))
		}
		in.MaxInFlight = rapid.IntRange(0, 50).Draw(t, "maxInFlight")
		in.MaxInFlightPerWorker = rapid.IntRange(0, 5).Draw(t, "maxInFlightPerWorker")
		var a allocator
		p := a.plan(in)
		if err := checkPlan(in, p); err != nil {
			t.Fatal(err)
		}
		if err := a.checkBuckets(); err != nil {
			t.Fatal(err)
		}
		sh := in
		sh.Workers = shuffled(t, in.Workers, "w")
		sh.TaskLists = shuffled(t, in.TaskLists, "tl")
		// Rows in reverse: the owner guesses miss, so lookups go by search or by map.
		sh.Current = slices.Clone(in.Current)
		slices.Reverse(sh.Current)
		if q := PlanAssignments(sh); !reflect.DeepEqual(q, p) {
			t.Fatalf("shuffled input plans differently")
		}
		again := in
		again.Current = asCurrent(p)
		if q := PlanAssignments(again); len(q.Moves) != 0 {
			t.Fatalf("re-planning from the target moves %d", len(q.Moves))
		}
	})
}

// checkBuckets verifies the allocator's class bitsets after a plan (once the dirty
// workers are filed): every eligible worker's bit is set in exactly one bucket, the one
// of its rel, and the counts agree.
func (a *allocator) checkBuckets() error {
	a.syncBuckets()
	for c := range a.classes {
		cl := &a.classes[c]
		for rel, b := range cl.buckets {
			n := 0
			for wi, word := range b {
				for bit := 0; bit < 64; bit++ {
					if word&(1<<bit) == 0 {
						continue
					}
					n++
					m := wi*64 + bit
					if m >= len(cl.members) {
						return fmt.Errorf("class %d bucket %d: bit %d set beyond %d members", c, rel, m, len(cl.members))
					}
					if w := a.workers[cl.members[m]]; w.rel != int32(rel) {
						return fmt.Errorf("class %d: worker %s is in bucket %d, its rel is %d", c, a.ids[cl.members[m]], rel, w.rel)
					}
				}
			}
			if n != int(cl.count[rel]) || (n == 0) != (b == nil) {
				return fmt.Errorf("class %d bucket %d: %d bits set, count %d", c, rel, n, cl.count[rel])
			}
		}
		for _, i := range cl.members {
			w := a.workers[i]
			if int(w.rel) >= len(cl.buckets) || cl.buckets[w.rel] == nil || cl.buckets[w.rel][w.member/64]&(1<<(w.member%64)) == 0 {
				return fmt.Errorf("class %d: worker %s (rel %d) is missing from its bucket", c, a.ids[i], w.rel)
			}
		}
	}
	return nil
}

// The small inputs above are solved exactly (exactExtras); this runs the same rules,
// determinism and stability through the fast path (greedy sticky cells, augmenting
// paths, the need-ordered completion), which large inputs take.
//
// The first plan of each input gets fresh scratch memory, the others share one scratch
// through every input (as plans share scratchPool's): a plan that read anything left
// over from an earlier one would plan the shuffled input differently.
func TestAllocPropFastPath(t *testing.T) {
	shared := new(allocScratch)
	plan := func(in PlanInput) Plan {
		a := allocator{forceFast: true, s: shared}
		return a.plan(in)
	}
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, allStates)
		if rapid.Bool().Draw(t, "scenario") {
			in = genScenario(t, true)
		}
		fresh := allocator{forceFast: true}
		p := fresh.plan(in)
		if err := checkPlan(in, p); err != nil {
			t.Fatal(err)
		}
		if err := fresh.checkBuckets(); err != nil {
			t.Fatal(err)
		}
		sh := in
		sh.TaskLists = shuffled(t, in.TaskLists, "tl")
		sh.Workers = shuffled(t, in.Workers, "w")
		sh.Current = shuffled(t, in.Current, "row")
		if q := plan(sh); !reflect.DeepEqual(q, p) {
			t.Fatalf("shuffled input plans differently")
		}
		again := in
		again.Current = asCurrent(p)
		if q := plan(again); len(q.Moves) != 0 {
			t.Fatalf("re-planning from the target moves %v", q.Moves)
		}
	})
}

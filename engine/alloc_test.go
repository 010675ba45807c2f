package engine

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// This file holds the allocator's table tests and the checker shared with the property
// tests (alloc_prop_test.go). The checker recomputes every rule from the input on its
// own, in the simplest way (maps, loops over every worker), so that it does not share
// the allocator's shortcuts.

func tl(d, n string, p int) TaskList { return TaskList{Domain: d, Name: n, Partitions: p} }

func wk(id string, capacity int) Worker { return Worker{ID: id, Capacity: capacity} }

func drainingWk(id string, capacity int) Worker {
	return Worker{ID: id, Capacity: capacity, Draining: true}
}

func pid(d, n string, k int) PartitionID { return PartitionID{Domain: d, TaskList: n, Partition: k} }

func assigned(d, n string, k int, owner string) Assignment {
	return Assignment{Partition: pid(d, n, k), Owner: owner, State: Assigned}
}

// refInput is the input as the contract says the allocator must read it.
type refInput struct {
	tls      []TaskList // sorted, deduplicated, partitions > 0
	workers  map[string]Worker
	ids      []string // sorted
	eligible []string // sorted
	capSum   int
	rows     map[PartitionID]Assignment // configured partitions only, deduplicated
}

func normalize(in PlanInput) refInput {
	r := refInput{workers: map[string]Worker{}, rows: map[PartitionID]Assignment{}}
	for _, w := range in.Workers {
		if w.Capacity < 1 {
			w.Capacity = 1
		}
		old, ok := r.workers[w.ID]
		if !ok || (old.Draining && !w.Draining) || (old.Draining == w.Draining && w.Capacity < old.Capacity) {
			r.workers[w.ID] = w
		}
	}
	for id, w := range r.workers {
		r.ids = append(r.ids, id)
		if !w.Draining {
			r.eligible = append(r.eligible, id)
			r.capSum += w.Capacity
		}
	}
	slices.Sort(r.ids)
	slices.Sort(r.eligible)
	byName := map[[2]string]int{}
	for _, t := range in.TaskLists {
		if t.Partitions <= 0 {
			continue
		}
		k := [2]string{t.Domain, t.Name}
		if t.Partitions > byName[k] {
			byName[k] = t.Partitions
		}
	}
	for k, p := range byName {
		r.tls = append(r.tls, TaskList{Domain: k[0], Name: k[1], Partitions: p})
	}
	slices.SortFunc(r.tls, func(x, y TaskList) int {
		return ComparePartitions(pid(x.Domain, x.Name, 0), pid(y.Domain, y.Name, 0))
	})
	for _, row := range in.Current {
		p := byName[[2]string{row.Partition.Domain, row.Partition.TaskList}]
		if row.Partition.Partition < 0 || row.Partition.Partition >= p {
			continue
		}
		old, ok := r.rows[row.Partition]
		if !ok || rowLess(&row, &old) {
			r.rows[row.Partition] = row
		}
	}
	return r
}

func (r refInput) isEligible(id string) bool {
	w, ok := r.workers[id]
	return ok && id != "" && !w.Draining
}

func (r refInput) isLive(id string) bool {
	_, ok := r.workers[id]
	return ok && id != ""
}

// holder is who a partition's row counts for: its Assigned eligible owner, or the
// eligible Target of a Releasing row; "" otherwise.
func (r refInput) holder(p PartitionID) string {
	row, ok := r.rows[p]
	if !ok {
		return ""
	}
	switch {
	case row.State == Assigned && r.isEligible(row.Owner):
		return row.Owner
	case row.State == Releasing && r.isEligible(row.Target):
		return row.Target
	}
	return ""
}

// currentOwner is the row's owner as Moves reports it.
func (r refInput) currentOwner(p PartitionID) string {
	row, ok := r.rows[p]
	if ok && (row.State == Assigned || row.State == Releasing) {
		return row.Owner
	}
	return ""
}

// minMoves is the fewest partitions that must leave a live eligible owner over every
// target that meets both levels of balance, computed by a min-cost flow of its own (an
// adjacency matrix and Bellman-Ford, nothing shared with the allocator): each task
// list's ceiling ("extra") slots are the flow, from the task list to a worker whose
// share of it is not whole; a slot on a worker that holds more than its floor saves one
// move; a worker's slots over all task lists are bounded by the cluster-wide floor and
// ceiling of its share less the sum of its floors.
func (r refInput) minMoves() int {
	if len(r.eligible) == 0 {
		return 0
	}
	T, N := len(r.tls), len(r.eligible)
	src, sink := 0, T+N+1
	n := sink + 1
	capM := make([][]int, n)
	cost := make([][]int, n)
	for i := range capM {
		capM[i], cost[i] = make([]int, n), make([]int, n)
	}
	arc := func(u, v, c, w int) { capM[u][v], cost[u][v], cost[v][u] = c, w, -w }
	P, above := 0, 0
	floors := map[string]int{}
	for ti, t := range r.tls {
		P += t.Partitions
		held := map[string]int{}
		for k := 0; k < t.Partitions; k++ {
			if h := r.holder(pid(t.Domain, t.Name, k)); h != "" {
				held[h]++
			}
		}
		slots := t.Partitions
		for wi, id := range r.eligible {
			c := r.workers[id].Capacity
			floor := t.Partitions * c / r.capSum
			slots -= floor
			floors[id] += floor
			if held[id] > floor {
				above += held[id] - floor
			}
			if t.Partitions*c%r.capSum != 0 {
				saves := 0
				if held[id] > floor {
					saves = 1
				}
				arc(1+ti, 1+T+wi, 1, -saves)
			}
		}
		arc(src, 1+ti, slots, 0)
	}
	// The lower bounds are met first: a unit through a worker's lower arc costs more
	// than every saving together.
	big := P + 1
	lower := make([]int, N)
	for wi, id := range r.eligible {
		c := r.workers[id].Capacity
		lo, hi := P*c/r.capSum-floors[id], (P*c+r.capSum-1)/r.capSum-floors[id]
		lower[wi] = lo
		arc(1+T+wi, sink, hi, 0) // the upper bound; its first lo units are made cheap below
	}
	saved := 0
	lowFlow := make([]int, N)
	for {
		// Bellman-Ford over the residual graph; a worker's arc to the sink costs -big
		// while it carries less than its lower bound.
		dist := make([]int, n)
		prev := make([]int, n)
		for i := range dist {
			dist[i], prev[i] = 1<<60, -1
		}
		dist[src] = 0
		edgeCost := func(u, v int) int {
			if v == sink && u > T && lowFlow[u-1-T] < lower[u-1-T] {
				return -big
			}
			if u == sink && v > T && lowFlow[v-1-T] <= lower[v-1-T] && lowFlow[v-1-T] > 0 {
				return big
			}
			return cost[u][v]
		}
		for it := 0; it < n; it++ {
			changed := false
			for u := 0; u < n; u++ {
				if dist[u] == 1<<60 {
					continue
				}
				for v := 0; v < n; v++ {
					if capM[u][v] > 0 && dist[u]+edgeCost(u, v) < dist[v] {
						dist[v], prev[v] = dist[u]+edgeCost(u, v), u
						changed = true
					}
				}
			}
			if !changed {
				break
			}
		}
		if prev[sink] < 0 {
			break
		}
		for v := sink; v != src; v = prev[v] {
			u := prev[v]
			if v == sink {
				lowFlow[u-1-T]++
			}
			if u == sink {
				lowFlow[v-1-T]--
			}
			if u >= 1 && u <= T && v > T && v < sink {
				saved -= cost[u][v]
			}
			if v >= 1 && v <= T && u > T && u < sink {
				saved += cost[v][u]
			}
			capM[u][v]--
			capM[v][u]++
		}
	}
	return above - saved
}

// checkCompact verifies the compact form of a plan on its own terms: TaskLists are the
// input's (sorted, each once, with partitions), Workers are the live ids sorted then the
// dead owners moves come from sorted, every index is in range, Owner has one entry per
// partition, and the move lists are sorted without repeats.
func checkCompact(r refInput, p Plan) error {
	if !slices.Equal(p.TaskLists, r.tls) {
		return fmt.Errorf("TaskLists = %v, want %v", p.TaskLists, r.tls)
	}
	if len(p.Workers) < len(r.ids) || !slices.Equal(p.Workers[:len(r.ids)], r.ids) {
		return fmt.Errorf("Workers = %v, want the live ids %v first", p.Workers, r.ids)
	}
	dead := p.Workers[len(r.ids):]
	if !slices.IsSorted(dead) || len(slices.Compact(slices.Clone(dead))) != len(dead) {
		return fmt.Errorf("dead owners %v are not sorted and distinct", dead)
	}
	for _, id := range dead {
		if r.isLive(id) || id == "" {
			return fmt.Errorf("dead owner %q is live or empty", id)
		}
	}
	if len(p.Owner) != len(p.TaskLists) {
		return fmt.Errorf("Owner has %d task lists, want %d", len(p.Owner), len(p.TaskLists))
	}
	for t, os := range p.Owner {
		if len(os) != p.TaskLists[t].Partitions {
			return fmt.Errorf("Owner[%d] has %d partitions, want %d", t, len(os), p.TaskLists[t].Partitions)
		}
		for k, o := range os {
			if o < -1 || int(o) >= len(r.ids) {
				return fmt.Errorf("Owner[%d][%d] = %d: not a live worker index", t, k, o)
			}
		}
	}
	usedDead := map[int32]bool{}
	for _, list := range []struct {
		name string
		ms   []PlanMove
	}{{"Moves", p.Moves}, {"Assign", p.Assign}, {"Release", p.Release}} {
		name, ms := list.name, list.ms
		for i, m := range ms {
			if m.TaskList < 0 || int(m.TaskList) >= len(p.TaskLists) || m.Partition < 0 || int(m.Partition) >= p.TaskLists[m.TaskList].Partitions {
				return fmt.Errorf("%s[%d] = %+v: partition out of range", name, i, m)
			}
			if m.To < 0 || int(m.To) >= len(r.ids) || m.From < -1 || int(m.From) >= len(p.Workers) {
				return fmt.Errorf("%s[%d] = %+v: worker index out of range", name, i, m)
			}
			if m.To != p.Owner[m.TaskList][m.Partition] {
				return fmt.Errorf("%s[%d] = %+v: To is not the target %d", name, i, m, p.Owner[m.TaskList][m.Partition])
			}
			if int(m.From) >= len(r.ids) {
				usedDead[m.From] = true
			}
			if i > 0 {
				prev := ms[i-1]
				if prev.TaskList > m.TaskList || (prev.TaskList == m.TaskList && prev.Partition >= m.Partition) {
					return fmt.Errorf("%s is not sorted (or has a repeat) at %d: %+v after %+v", name, i, m, prev)
				}
			}
		}
	}
	if len(usedDead) != len(dead) {
		return fmt.Errorf("Workers lists %d dead owners, moves come from %d", len(dead), len(usedDead))
	}
	return nil
}

// checkPlan verifies rules 1–3 and the throttle bounds of one plan, and that Moves,
// Assign, Release and Spread say what the target implies. It reads the plan spelled out
// (Targets, ExpandMoves) after checking the compact form (checkCompact).
func checkPlan(in PlanInput, cp Plan) error {
	r := normalize(in)
	if err := checkCompact(r, cp); err != nil {
		return err
	}
	p := expand(cp)
	n := 0
	for _, t := range r.tls {
		n += t.Partitions
	}
	if len(p.Target) != n || cp.Partitions() != n {
		return fmt.Errorf("target has %d placements (Partitions() %d), want %d", len(p.Target), cp.Partitions(), n)
	}
	target := map[PartitionID]string{}
	i := 0
	for _, t := range r.tls {
		for k := 0; k < t.Partitions; k++ {
			pl := p.Target[i]
			i++
			if pl.Partition != pid(t.Domain, t.Name, k) {
				return fmt.Errorf("target[%d] is %v, want %v (sorted, each once)", i-1, pl.Partition, pid(t.Domain, t.Name, k))
			}
			if got := cp.TargetOf(pl.Partition); got != pl.Owner {
				return fmt.Errorf("TargetOf(%v) = %q, Targets says %q", pl.Partition, got, pl.Owner)
			}
			target[pl.Partition] = pl.Owner
			// Rule 1: complete, and only to eligible workers.
			if len(r.eligible) > 0 && !r.isEligible(pl.Owner) {
				return fmt.Errorf("rule 1: %v goes to %q, not an eligible worker", pl.Partition, pl.Owner)
			}
			if len(r.eligible) == 0 && pl.Owner != "" {
				return fmt.Errorf("rule 1: %v goes to %q with no eligible worker", pl.Partition, pl.Owner)
			}
		}
	}
	for _, id := range []PartitionID{pid("d0", "unknown", 0), pid("", "", 0), pid("d0", "t0", -1), pid("d0", "t0", 1<<20)} {
		if got := cp.TargetOf(id); got != "" {
			return fmt.Errorf("TargetOf(%v) = %q for a partition not in the plan", id, got)
		}
	}
	if len(r.eligible) == 0 {
		if n > 0 && p.Reason == "" {
			return fmt.Errorf("rule 1: no eligible worker but Reason is empty")
		}
	} else if p.Reason != "" {
		return fmt.Errorf("Reason %q set with eligible workers", p.Reason)
	}

	// Rule 2: balanced per task list.
	totals := map[string]int{}
	for _, t := range r.tls {
		got := map[string]int{}
		for k := 0; k < t.Partitions; k++ {
			got[target[pid(t.Domain, t.Name, k)]]++
		}
		for _, id := range r.eligible {
			c := r.workers[id].Capacity
			floor := t.Partitions * c / r.capSum
			ceil := (t.Partitions*c + r.capSum - 1) / r.capSum
			if got[id] != floor && got[id] != ceil {
				return fmt.Errorf("rule 2: %s/%s: %s (capacity %d of %d) gets %d, want %d or %d", t.Domain, t.Name, id, c, r.capSum, got[id], floor, ceil)
			}
			totals[id] += got[id]
		}
	}

	// Rule 2, cluster-wide: every eligible worker holds the floor or the ceiling of its
	// share of all partitions.
	all := 0
	for _, t := range r.tls {
		all += t.Partitions
	}
	for _, id := range r.eligible {
		c := r.workers[id].Capacity
		floor, ceil := all*c/r.capSum, (all*c+r.capSum-1)/r.capSum
		if totals[id] != floor && totals[id] != ceil {
			return fmt.Errorf("rule 2, cluster-wide: %s (capacity %d of %d) holds %d of %d, want %d or %d", id, c, r.capSum, totals[id], all, floor, ceil)
		}
	}

	// Rule 3: sticky — exactly the minimum leaves a live eligible owner.
	left := 0
	for part, to := range target {
		if h := r.holder(part); h != "" && h != to {
			left++
		}
	}
	if want := r.minMoves(); left != want {
		return fmt.Errorf("rule 3: %d partitions leave a live eligible owner, minimum is %d", left, want)
	}

	// Moves, Assign, Release.
	var wantMoves, wantAssign []Move
	var candidates []Move
	inflight, inflightW := 0, map[string]int{}
	for _, row := range r.rows {
		if row.State == Releasing && r.isLive(row.Owner) {
			inflight++
			inflightW[row.Owner]++
		}
	}
	for _, pl := range p.Target {
		from := r.currentOwner(pl.Partition)
		if pl.Owner == "" || pl.Owner == from {
			continue
		}
		m := Move{Partition: pl.Partition, From: from, To: pl.Owner}
		wantMoves = append(wantMoves, m)
		row := r.rows[pl.Partition]
		switch {
		case !r.isLive(from):
			wantAssign = append(wantAssign, m)
		case row.State == Assigned:
			candidates = append(candidates, m)
		}
	}
	if !slices.Equal(p.Moves, wantMoves) {
		return fmt.Errorf("Moves = %v, want %v", p.Moves, wantMoves)
	}
	if !slices.Equal(p.Assign, wantAssign) {
		return fmt.Errorf("Assign = %v, want %v", p.Assign, wantAssign)
	}
	if p.InFlight != inflight {
		return fmt.Errorf("InFlight = %d, want %d", p.InFlight, inflight)
	}
	// Rule 6: Release is a sorted subset of the candidates within the throttle, and, as
	// the throttle is work-conserving, as large as it allows.
	ci := 0
	relW := map[string]int{}
	for _, m := range p.Release {
		for ci < len(candidates) && candidates[ci] != m {
			ci++
		}
		if ci == len(candidates) {
			return fmt.Errorf("rule 6: release %v is not a pending move from a live Assigned owner (or not sorted)", m)
		}
		relW[m.From]++
	}
	roomW := func(id string) int {
		if in.MaxInFlightPerWorker <= 0 {
			return 1 << 30
		}
		return max(0, in.MaxInFlightPerWorker-inflightW[id])
	}
	room := 1 << 30
	if in.MaxInFlight > 0 {
		room = max(0, in.MaxInFlight-inflight)
	}
	if len(p.Release) > room {
		return fmt.Errorf("rule 6: %d releases with %d in flight, MaxInFlight %d", len(p.Release), inflight, in.MaxInFlight)
	}
	possible := 0
	candW := map[string]int{}
	for _, m := range candidates {
		candW[m.From]++
	}
	for id, c := range candW {
		if relW[id] > roomW(id) {
			return fmt.Errorf("rule 6: %d releases from %s with %d in flight, MaxInFlightPerWorker %d", relW[id], id, inflightW[id], in.MaxInFlightPerWorker)
		}
		possible += min(c, roomW(id))
	}
	if want := min(possible, room); len(p.Release) != want {
		return fmt.Errorf("rule 6: %d releases started, the throttle allows %d", len(p.Release), want)
	}

	// Spread.
	spread := 0
	if len(r.eligible) > 0 {
		lo, hi := 1<<62, -1
		for _, id := range r.eligible {
			v := totals[id] * 1000 / r.workers[id].Capacity
			lo, hi = min(lo, v), max(hi, v)
		}
		spread = hi - lo
	}
	if p.Spread != spread {
		return fmt.Errorf("Spread = %d, want %d", p.Spread, spread)
	}
	return nil
}

// expandedPlan is a Plan spelled out, as the tests read it.
type expandedPlan struct {
	Target                 []Placement
	Moves, Assign, Release []Move
	Reason                 string
	Spread, InFlight       int
}

func expand(p Plan) expandedPlan {
	return expandedPlan{
		Target: p.Targets(), Moves: p.ExpandMoves(p.Moves), Assign: p.ExpandMoves(p.Assign), Release: p.ExpandMoves(p.Release),
		Reason: p.Reason, Spread: p.Spread, InFlight: p.InFlight,
	}
}

// owners maps worker id → partitions targeted to it.
func owners(p Plan) map[string][]int {
	m := map[string][]int{}
	for _, pl := range p.Targets() {
		m[pl.Owner] = append(m[pl.Owner], pl.Partition.Partition)
	}
	return m
}

// asCurrent turns a plan's target into the assignment rows of the settled state.
func asCurrent(p Plan) []Assignment {
	var rows []Assignment
	for _, pl := range p.Targets() {
		if pl.Owner != "" {
			rows = append(rows, Assignment{Partition: pl.Partition, Owner: pl.Owner, State: Assigned})
		}
	}
	return rows
}

func countOf(p Plan, id string) int { return len(owners(p)[id]) }

func TestAllocTable(t *testing.T) {
	three := []Worker{wk("a", 1), wk("b", 1), wk("c", 1)}
	settled := PlanAssignments(PlanInput{TaskLists: []TaskList{tl("d", "t", 9)}, Workers: three})
	cases := []struct {
		name  string
		in    PlanInput
		check func(t *testing.T, p Plan)
	}{
		{"even split", PlanInput{TaskLists: []TaskList{tl("d", "t", 6)}, Workers: three}, func(t *testing.T, p Plan) {
			for _, id := range []string{"a", "b", "c"} {
				if countOf(p, id) != 2 {
					t.Errorf("%s has %d, want 2", id, countOf(p, id))
				}
			}
			if len(p.Assign) != 6 || len(p.Release) != 0 || p.Spread != 0 {
				t.Errorf("assign %d release %d spread %d, want 6 0 0", len(p.Assign), len(p.Release), p.Spread)
			}
		}},
		{"remainder", PlanInput{TaskLists: []TaskList{tl("d", "t", 7)}, Workers: three}, func(t *testing.T, p Plan) {
			// The one extra goes to one of them (the fixed tie-break decides which).
			got := []int{countOf(p, "a"), countOf(p, "b"), countOf(p, "c")}
			if slices.Sort(got); !slices.Equal(got, []int{2, 2, 3}) {
				t.Errorf("counts %v, want 3, 2, 2 in some order", got)
			}
			if p.Spread != 1000 {
				t.Errorf("spread %d, want 1000", p.Spread)
			}
		}},
		{"remainders spread over task lists", PlanInput{TaskLists: []TaskList{tl("d", "t1", 1), tl("d", "t2", 1), tl("d", "t3", 1)}, Workers: three}, func(t *testing.T, p Plan) {
			for _, id := range []string{"a", "b", "c"} {
				if countOf(p, id) != 1 {
					t.Errorf("%s has %d partitions, want 1 (one worker must not get every task list's extra)", id, countOf(p, id))
				}
			}
		}},
		{"weighted remainders spread over task lists", PlanInput{TaskLists: []TaskList{tl("d", "t1", 1), tl("d", "t2", 1), tl("d", "t3", 1)}, Workers: []Worker{wk("a", 1), wk("b", 2)}}, func(t *testing.T, p Plan) {
			if countOf(p, "a") != 1 || countOf(p, "b") != 2 || p.Spread != 0 {
				t.Errorf("a has %d, b has %d, spread %d; want 1, 2, 0", countOf(p, "a"), countOf(p, "b"), p.Spread)
			}
		}},
		{"more workers than partitions", PlanInput{TaskLists: []TaskList{tl("d", "t", 2)}, Workers: []Worker{wk("a", 1), wk("b", 1), wk("c", 1), wk("d", 1), wk("e", 1)}}, func(t *testing.T, p Plan) {
			o := owners(p)
			if len(o) != 2 {
				t.Errorf("owners %v, want two workers with one each", o)
			}
		}},
		{"one worker", PlanInput{TaskLists: []TaskList{tl("d", "t", 5), tl("e", "u", 3)}, Workers: []Worker{wk("solo", 3)}}, func(t *testing.T, p Plan) {
			if countOf(p, "solo") != 8 || p.Spread != 0 {
				t.Errorf("solo has %d spread %d, want 8 and 0", countOf(p, "solo"), p.Spread)
			}
		}},
		{"zero partitions", PlanInput{TaskLists: []TaskList{tl("d", "t", 0)}, Workers: three, Current: []Assignment{assigned("d", "t", 0, "a")}}, func(t *testing.T, p Plan) {
			if p.Partitions()+len(p.Moves)+len(p.Assign)+len(p.Release) != 0 || p.Reason != "" {
				t.Errorf("plan %+v, want empty", p)
			}
		}},
		{"no task lists", PlanInput{Workers: three}, func(t *testing.T, p Plan) {
			if p.Partitions() != 0 || p.Reason != "" {
				t.Errorf("plan %+v, want empty", p)
			}
		}},
		{"worker joins", PlanInput{TaskLists: []TaskList{tl("d", "t", 9)}, Workers: append(slices.Clone(three), wk("z", 1)), Current: asCurrent(settled)}, func(t *testing.T, p Plan) {
			// 9 over 4 is 3,2,2,2: a keeps its 3 (tie by id), b and c give one each to z.
			if len(p.Moves) != 2 || countOf(p, "z") != 2 {
				t.Errorf("moves %v, z has %d; want 2 moves to z", p.Moves, countOf(p, "z"))
			}
			for _, m := range p.ExpandMoves(p.Moves) {
				if m.To != "z" {
					t.Errorf("move %v not to the new worker", m)
				}
			}
			if !slices.Equal(p.Moves, p.Release) || len(p.Assign) != 0 {
				t.Errorf("release %v assign %v: every move is a release from a live owner", p.Release, p.Assign)
			}
		}},
		{"worker leaves", PlanInput{TaskLists: []TaskList{tl("d", "t", 9)}, Workers: three[:2], Current: asCurrent(settled)}, func(t *testing.T, p Plan) {
			if len(p.Moves) != 3 || len(p.Assign) != 3 || len(p.Release) != 0 {
				t.Errorf("moves %v assign %v release %v: want c's 3 partitions assigned", p.Moves, p.Assign, p.Release)
			}
			for _, m := range p.ExpandMoves(p.Assign) {
				if m.From != "c" {
					t.Errorf("assign %v: From should name the dead owner", m)
				}
			}
		}},
		{"drain", PlanInput{TaskLists: []TaskList{tl("d", "t", 9)}, Workers: []Worker{wk("a", 1), wk("b", 1), drainingWk("c", 1)}, Current: asCurrent(settled), MaxInFlight: 2}, func(t *testing.T, p Plan) {
			if countOf(p, "c") != 0 || len(p.Moves) != 3 {
				t.Errorf("c keeps %d, moves %v; want all 3 of c's moved", countOf(p, "c"), p.Moves)
			}
			if len(p.Release) != 2 || len(p.Assign) != 0 {
				t.Errorf("release %v assign %v: want 2 throttled releases from c", p.Release, p.Assign)
			}
		}},
		{"weights 1:2:3", PlanInput{TaskLists: []TaskList{tl("d", "t", 12)}, Workers: []Worker{wk("a", 1), wk("b", 2), wk("c", 3)}}, func(t *testing.T, p Plan) {
			if got := []int{countOf(p, "a"), countOf(p, "b"), countOf(p, "c")}; !slices.Equal(got, []int{2, 4, 6}) {
				t.Errorf("counts %v, want [2 4 6]", got)
			}
		}},
		{"a partition mid-release", PlanInput{TaskLists: []TaskList{tl("d", "t", 4)}, Workers: []Worker{wk("a", 1), wk("b", 1)}, Current: []Assignment{
			assigned("d", "t", 0, "a"), assigned("d", "t", 1, "a"), assigned("d", "t", 2, "a"),
			{Partition: pid("d", "t", 3), Owner: "a", State: Releasing, Target: "b"},
		}, MaxInFlight: 1}, func(t *testing.T, p Plan) {
			// p3 counts for b, so one more moves to b, but the throttle is full.
			if countOf(p, "b") != 2 || len(p.Release) != 0 || p.InFlight != 1 {
				t.Errorf("b gets %d, release %v, in flight %d; want 2, none, 1", countOf(p, "b"), p.Release, p.InFlight)
			}
			if got := p.TargetOf(pid("d", "t", 3)); got != "b" {
				t.Errorf("the handoff in flight is redirected to %q", got)
			}
		}},
		{"acked release goes to its target", PlanInput{TaskLists: []TaskList{tl("d", "t", 4)}, Workers: []Worker{wk("a", 1), wk("b", 1)}, Current: []Assignment{
			assigned("d", "t", 0, "b"), assigned("d", "t", 1, "a"), assigned("d", "t", 2, "a"),
			{Partition: pid("d", "t", 3), State: Unassigned, Target: "b"},
		}}, func(t *testing.T, p Plan) {
			if len(p.Moves) != 1 || p.Move(p.Moves[0]) != (Move{Partition: pid("d", "t", 3), To: "b"}) {
				t.Errorf("moves %v, want just p3 to b", p.Moves)
			}
		}},
		{"acked releases go back to their own targets", PlanInput{TaskLists: []TaskList{tl("d", "t", 6)}, Workers: three, Current: []Assignment{
			assigned("d", "t", 0, "a"), assigned("d", "t", 1, "a"), assigned("d", "t", 2, "b"), assigned("d", "t", 3, "c"),
			{Partition: pid("d", "t", 4), State: Unassigned, Target: "c"},
			{Partition: pid("d", "t", 5), State: Unassigned, Target: "b"},
		}}, func(t *testing.T, p Plan) {
			if p4, p5 := p.TargetOf(pid("d", "t", 4)), p.TargetOf(pid("d", "t", 5)); p4 != "c" || p5 != "b" {
				t.Errorf("p4 → %q, p5 → %q; want the hints c and b", p4, p5)
			}
		}},
		{"an over-quota target gives up the handoff in flight, not a partition it runs", PlanInput{TaskLists: []TaskList{tl("d", "t", 4)}, Workers: []Worker{wk("a", 1), wk("b", 1)}, Current: []Assignment{
			assigned("d", "t", 0, "a"), assigned("d", "t", 1, "b"), assigned("d", "t", 2, "b"),
			{Partition: pid("d", "t", 3), Owner: "a", State: Releasing, Target: "b"},
		}}, func(t *testing.T, p Plan) {
			// b counts 3 (two running, one arriving) of a quota of 2: redirecting p3 back
			// costs no extra handoff, moving p1 or p2 would.
			if tg := p.Targets(); tg[1].Owner != "b" || tg[2].Owner != "b" || tg[3].Owner != "a" || len(p.Release) != 0 {
				t.Errorf("target %v release %v; want p1, p2 kept by b and p3 redirected to a", tg, p.Release)
			}
		}},
		{"no eligible workers", PlanInput{TaskLists: []TaskList{tl("d", "t", 3)}, Workers: []Worker{drainingWk("a", 1)}, Current: []Assignment{assigned("d", "t", 0, "a")}}, func(t *testing.T, p Plan) {
			if p.Reason == "" || len(p.Moves)+len(p.Assign)+len(p.Release) != 0 || p.Partitions() != 3 {
				t.Errorf("plan %+v: want 3 unowned placements, no moves, a Reason", p)
			}
			for _, pl := range p.Targets() {
				if pl.Owner != "" {
					t.Errorf("%v has owner %q", pl.Partition, pl.Owner)
				}
			}
		}},
		{"no workers at all", PlanInput{TaskLists: []TaskList{tl("d", "t", 2)}}, func(t *testing.T, p Plan) {
			if !strings.Contains(p.Reason, "no eligible worker") {
				t.Errorf("Reason %q", p.Reason)
			}
		}},
		{"per-worker throttle", PlanInput{TaskLists: []TaskList{tl("d", "t", 8)}, Workers: []Worker{wk("a", 1), wk("b", 1), wk("c", 1), wk("e", 1)}, Current: []Assignment{
			assigned("d", "t", 0, "a"), assigned("d", "t", 1, "a"), assigned("d", "t", 2, "a"), assigned("d", "t", 3, "a"),
			assigned("d", "t", 4, "b"), assigned("d", "t", 5, "b"), assigned("d", "t", 6, "b"), assigned("d", "t", 7, "b"),
		}, MaxInFlightPerWorker: 1}, func(t *testing.T, p Plan) {
			if rel := p.ExpandMoves(p.Release); len(p.Moves) != 4 || len(rel) != 2 || rel[0].From != "a" || rel[1].From != "b" {
				t.Errorf("moves %v release %v: want 4 moves, one release from each of a and b", p.Moves, p.Release)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := PlanAssignments(c.in)
			if err := checkPlan(c.in, p); err != nil {
				t.Fatal(err)
			}
			c.check(t, p)
			// Settled: planning again from the target moves nothing.
			again := PlanAssignments(PlanInput{TaskLists: c.in.TaskLists, Workers: c.in.Workers, Current: asCurrent(p)})
			if p.Partitions() > 0 && p.Reason == "" && len(again.Moves) != 0 {
				t.Errorf("re-planning from the target moves %v", again.Moves)
			}
		})
	}
}

// The plan does not depend on the order the workers are listed in: a tie goes to the
// same worker either way.
func TestAllocTieBreakIndependentOfInputOrder(t *testing.T) {
	ba := PlanInput{TaskLists: []TaskList{tl("d", "t", 1)}, Workers: []Worker{wk("b", 1), wk("a", 1)}}
	ab := PlanInput{TaskLists: ba.TaskLists, Workers: []Worker{wk("a", 1), wk("b", 1)}}
	want := PlanAssignments(ab).TargetOf(pid("d", "t", 0))
	if got := PlanAssignments(ba).TargetOf(pid("d", "t", 0)); got != want {
		t.Errorf("the tie goes to %q listed b, a and to %q listed a, b", got, want)
	}
}

// With MaxInFlight 2 and MaxInFlightPerWorker 1, draining a (1 partition), b (1) and
// c (2) takes two rounds only if c starts in the first: the throttle serves the source
// with the most pending first.
func TestAllocThrottleFewestRounds(t *testing.T) {
	in := PlanInput{
		TaskLists: []TaskList{tl("d", "t", 4)},
		Workers:   []Worker{drainingWk("a", 1), drainingWk("b", 1), drainingWk("c", 1), wk("e", 1)},
		Current: []Assignment{
			assigned("d", "t", 0, "a"), assigned("d", "t", 1, "b"), assigned("d", "t", 2, "c"), assigned("d", "t", 3, "c"),
		},
		MaxInFlight: 2, MaxInFlightPerWorker: 1,
	}
	rows := map[PartitionID]Assignment{}
	for _, r := range in.Current {
		rows[r.Partition] = r
	}
	rounds := 0
	for ; rounds < 10; rounds++ {
		in.Current = rowsOf(rows)
		p := PlanAssignments(in)
		if err := checkPlan(in, p); err != nil {
			t.Fatal(err)
		}
		if len(p.Release) == 0 {
			break
		}
		applyRound(rows, p, func(PartitionID) bool { return true })
	}
	if rounds != 2 {
		t.Fatalf("%d rounds of releases, want 2", rounds)
	}
}

// Owner lookups take three paths: the guesses (the last owner found, or the next
// worker), binary search over the sorted ids, and a map built once searches are many.
// Whatever the path, the plan is the same.
func TestAllocLookupPaths(t *testing.T) {
	for _, weighted := range []bool{false, true} {
		var in PlanInput
		for i := 0; i < 300; i++ {
			c := 1
			if weighted {
				c += i % 3
			}
			in.Workers = append(in.Workers, wk(fmt.Sprintf("w%03d", i), c))
		}
		for i := 0; i < 4; i++ {
			in.TaskLists = append(in.TaskLists, tl("d", fmt.Sprintf("t%d", i), 250))
		}
		settled := asCurrent(PlanAssignments(in))
		in.Workers = append(in.Workers[5:], wk("x", 1)) // five leave (dead owners), one joins

		plan := func(rows []Assignment) (Plan, *allocator) {
			t.Helper()
			c := in
			c.Current = rows
			var a allocator
			p := a.plan(c)
			if err := checkPlan(c, p); err != nil {
				t.Fatal(err)
			}
			return p, &a
		}
		sorted, a := plan(settled)
		// With equal capacities and fewer partitions per task list than workers, a
		// settled assignment gives consecutive partitions to consecutive workers.
		if !weighted && (a.byID != nil || a.searches > 64) {
			t.Errorf("sorted rows: %d binary searches, map built %v; want the guesses to find nearly every owner", a.searches, a.byID != nil)
		}
		swapped := slices.Clone(settled)
		for i := 0; i+1 < len(swapped); i += 97 {
			swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
		}
		p, a := plan(swapped)
		if !weighted && (a.byID != nil || a.searches == 0) {
			t.Errorf("a few rows out of order: %d binary searches, map built %v; want searches, no map", a.searches, a.byID != nil)
		}
		if !reflect.DeepEqual(p, sorted) {
			t.Errorf("weighted %v: a few rows out of order plan differently", weighted)
		}
		reversed := slices.Clone(settled)
		slices.Reverse(reversed)
		p, a = plan(reversed)
		if a.byID == nil {
			t.Errorf("weighted %v: reversed rows: %d binary searches and no map; want the map", weighted, a.searches)
		}
		if !reflect.DeepEqual(p, sorted) {
			t.Errorf("weighted %v: reversed rows plan differently", weighted)
		}
	}
}

// A partition listed twice keeps the first row in (State, Owner, Target) order, however
// late the second copy comes (the allocator only starts remembering rows when it meets
// the first duplicate).
func TestAllocDuplicateRows(t *testing.T) {
	in := PlanInput{TaskLists: []TaskList{tl("d", "t", 40)}, Workers: []Worker{wk("a", 1), wk("b", 1)}}
	for k := 0; k < 40; k++ {
		in.Current = append(in.Current, assigned("d", "t", k, []string{"a", "b"}[k%2]))
	}
	dups := []Assignment{
		{Partition: pid("d", "t", 39), State: Unassigned, Target: "a"},           // wins over the Assigned row (Unassigned < Assigned)
		assigned("d", "t", 0, "gone"),                                            // loses to owner "a" ("a" < "gone")
		assigned("d", "t", 1, "a"),                                               // wins over owner "b"
		{Partition: pid("d", "t", 2), Owner: "a", State: Releasing, Target: "b"}, // loses to Assigned
	}
	for _, rows := range [][]Assignment{
		append(slices.Clone(in.Current), dups...),
		append(slices.Clone(dups), in.Current...),
	} {
		c := in
		c.Current = rows
		p := PlanAssignments(c)
		if err := checkPlan(c, p); err != nil {
			t.Fatal(err)
		}
		// p0, p1 and p2 count for a, p39 is unowned with the hint a: a holds 21 (0, 1, 2
		// and the even ones), one over its 20, so it gives up its last (p38) and p39's
		// hint finds it full: both go to b, which holds 18.
		want := []Move{{Partition: pid("d", "t", 38), From: "a", To: "b"}, {Partition: pid("d", "t", 39), To: "b"}}
		if got := p.ExpandMoves(p.Moves); !slices.Equal(got, want) {
			t.Errorf("moves %v, want %v", got, want)
		}
	}
}

// sameString must be == for every pair of lengths and every position of a difference,
// in particular around its 8- and 16-byte words.
func TestSameString(t *testing.T) {
	base := "0123456789abcdefghijklmnopqrst"
	for n := 0; n <= 20; n++ {
		a := base[:n]
		b := string(append([]byte(nil), a...)) // equal, not sharing memory
		if !sameString(a, b) {
			t.Fatalf("len %d: equal strings compare different", n)
		}
		for k := 0; k < n; k++ {
			c := []byte(b)
			c[k] ^= 0x20
			if sameString(a, string(c)) {
				t.Fatalf("len %d: strings differing at byte %d compare equal", n, k)
			}
		}
		if n > 0 && (sameString(a, a[:n-1]) || sameString(a[:n-1], a)) {
			t.Fatalf("len %d: a prefix compares equal", n)
		}
	}
}

// The case TestAllocPropThrottledRoundsFastPath found (rapid seed 8451766553299192015):
// after w1, w2 and w4 leave, w3 goes from capacity 2 to 1 and w6 joins, every worker
// must take exactly two of the three task lists' extras, and the fast path picked a
// different but equally good split at the fourth round, so d0/t2/2 and d0/t3/1 moved
// to workers the first plan did not name. With each plan passed to the next as
// Previous, the rounds reach the first plan's target, moving only what it moved.
func TestAllocFastPathNoDrift(t *testing.T) {
	before := PlanInput{
		TaskLists: []TaskList{tl("d0", "t3", 2), tl("d0", "t2", 4), tl("d0", "t1", 9)},
		Workers:   []Worker{wk("w0", 2), wk("w1", 1), wk("w2", 1), wk("w3", 2), wk("w4", 1)},
	}
	in := PlanInput{
		TaskLists:            before.TaskLists,
		Workers:              []Worker{wk("w0", 2), wk("w3", 1), wk("w6", 2)},
		Current:              asCurrent(PlanAssignments(before)),
		MaxInFlightPerWorker: 1,
	}
	plan := func(in PlanInput) Plan {
		a := allocator{forceFast: true}
		return a.plan(in)
	}
	first := plan(in)
	if err := checkPlan(in, first); err != nil {
		t.Fatal(err)
	}
	rows := map[PartitionID]Assignment{}
	for _, r := range in.Current {
		rows[r.Partition] = r
	}
	var released []PartitionID
	prev := first
	for round := 0; ; round++ {
		if round > 20 {
			t.Fatal("not settled after 20 rounds")
		}
		in.Current, in.Previous = rowsOf(rows), &prev
		p := plan(in)
		if err := checkPlan(in, p); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(p.Moves) == 0 {
			if !reflect.DeepEqual(p.Targets(), first.Targets()) {
				t.Fatalf("round %d: settled target differs from the first plan's:\n got %v\nwant %v", round, p.Targets(), first.Targets())
			}
			break
		}
		for _, m := range p.ExpandMoves(p.Release) {
			released = append(released, m.Partition)
		}
		applyRound(rows, p, func(PartitionID) bool { return true })
		prev = p
	}
	var want []PartitionID // the first plan's moves away from a live owner
	for _, m := range first.ExpandMoves(first.Moves) {
		if slices.Contains([]string{"w0", "w3", "w6"}, m.From) {
			want = append(want, m.Partition)
		}
	}
	slices.SortFunc(released, ComparePartitions)
	slices.SortFunc(want, ComparePartitions)
	if !slices.Equal(released, want) {
		t.Fatalf("released %v, the first plan moved %v from live owners", released, want)
	}
}

// A previous plan that does not fit costs nothing and breaks nothing: another
// cluster's is ignored (the plan is the one made without it), and one from before a
// join, or one whose fields are out of range or out of order, still gives a plan that
// meets every rule.
func TestAllocPreviousStaleHarmless(t *testing.T) {
	before := PlanInput{
		TaskLists: []TaskList{tl("d", "a", 10), tl("d", "b", 7), tl("d", "c", 3)},
		Workers:   []Worker{wk("w1", 1), wk("w2", 2), wk("w3", 1)},
	}
	in := PlanInput{
		TaskLists:   before.TaskLists,
		Workers:     append(slices.Clone(before.Workers), wk("w4", 1)),
		Current:     asCurrent(PlanAssignments(before)),
		MaxInFlight: 2,
	}
	for _, fast := range []bool{false, true} {
		plan := func(in PlanInput) Plan {
			a := allocator{forceFast: fast}
			return a.plan(in)
		}
		want := plan(in)
		foreign := plan(PlanInput{TaskLists: []TaskList{tl("x", "y", 12)}, Workers: []Worker{wk("v1", 1), wk("v2", 1)}})
		old := plan(before)
		bad := func(f func(p *Plan)) Plan {
			p := plan(in)
			p.Owner = slices.Clone(p.Owner)
			for t := range p.Owner {
				p.Owner[t] = slices.Clone(p.Owner[t])
			}
			p.Workers = slices.Clone(p.Workers)
			p.extraOff, p.extraW = slices.Clone(p.extraOff), slices.Clone(p.extraW)
			f(&p)
			return p
		}
		cases := map[string]Plan{
			"foreign cluster":       foreign,
			"before the join":       old,
			"extras cut short":      bad(func(p *Plan) { p.extraOff = p.extraOff[:1] }),
			"extras out of range":   bad(func(p *Plan) { p.extraW = append(p.extraW, 99, -5); p.extraOff[len(p.extraOff)-1] += 2 }),
			"extras offsets broken": bad(func(p *Plan) { p.extraOff[0] = 1 << 20 }),
			"owners out of range":   bad(func(p *Plan) { p.Owner[0][0], p.Owner[1][1] = 1<<20, -7 }),
			"owners cut short":      bad(func(p *Plan) { p.Owner[2] = nil }),
			"owner lists missing":   bad(func(p *Plan) { p.Owner = p.Owner[:1] }),
			"workers reversed":      bad(func(p *Plan) { slices.Reverse(p.Workers) }),
			"no extras recorded":    bad(func(p *Plan) { p.extraOff, p.extraW = nil, nil }),
			"zero plan":             {},
		}
		names := slices.Sorted(maps.Keys(cases))
		for _, name := range names {
			prev := cases[name]
			in := in
			in.Previous = &prev
			got := plan(in)
			if err := checkPlan(in, got); err != nil {
				t.Errorf("fast %v, %s: %v", fast, name, err)
			}
			if name == "foreign cluster" || name == "zero plan" || name == "owner lists missing" {
				if !reflect.DeepEqual(got, want) {
					t.Errorf("fast %v, %s: the plan differs from the one made without it", fast, name)
				}
			}
		}
	}
}

// A partition left to the pool goes to its previous target when that worker still
// needs one, rather than by rank: here the previous plan sent d/t/0 to w2 and d/t/1 to
// w1 (both unassigned now, say the assignments were not written), and so does the plan.
func TestAllocPoolToPrevious(t *testing.T) {
	in := PlanInput{TaskLists: []TaskList{tl("d", "t", 2)}, Workers: []Worker{wk("w1", 1), wk("w2", 1)}}
	if p := PlanAssignments(in); p.TargetOf(pid("d", "t", 0)) != "w1" {
		t.Fatalf("without a previous plan d/t/0 goes to %q, want w1 (rank order)", p.TargetOf(pid("d", "t", 0)))
	}
	in.Previous = &Plan{TaskLists: in.TaskLists, Workers: []string{"w1", "w2"}, Owner: [][]int32{{1, 0}}}
	p := PlanAssignments(in)
	if err := checkPlan(in, p); err != nil {
		t.Fatal(err)
	}
	if a, b := p.TargetOf(pid("d", "t", 0)), p.TargetOf(pid("d", "t", 1)); a != "w2" || b != "w1" {
		t.Fatalf("d/t/0 → %q, d/t/1 → %q; the previous plan said w2, w1", a, b)
	}
}

package engine

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"github.com/helixcoord/helix/internal/flaw"
)

// The allocator: a pure function from (task lists, live workers, current rows, throttle)
// to the target owner of every partition and the actions to take now.
//
// Per task list with P partitions and eligible workers of total capacity W, worker i of
// capacity w gets floor(P·w/W) partitions, or one more when P·w/W is not whole; the R
// "extra" slots left after the floors go first to workers that already hold more than
// their floor (each such choice saves a move, so this is what makes the plan minimal in
// moves), and the rest, where stickiness leaves freedom, to the workers with the fewest
// partitions per capacity over the task lists planned so far, ties by id. That last rule
// is what keeps the cluster-wide spread small when there are many small task lists.
//
// Stickiness comes first: a move is made only when some task list is out of balance.
// With many task lists smaller than the number of workers, every task list can already
// be balanced (each worker holds 0 or 1 of it) while the cluster is not: a worker that
// joins then gets nothing until a task list changes or a worker leaves, and Plan.Spread
// reports the imbalance.
//
// Cost: workers are grouped by capacity into classes. Within a class every worker's
// floor is the same, so a class whose floor is 0 costs nothing per task list; only the
// workers that hold or receive partitions of a task list are touched. The choice of
// "fewest so far" needs the workers of a class in (total, id) order: a class keeps its
// members in buckets by total, each bucket a bitset over the members in id order, and a
// class-wide offset, so a floor given to every member is one addition and an extra is a
// bit moved to the next bucket. Planning is therefore
// O(rows + partitions + task lists·classes·class size/64), never O(partitions·workers).

// Worker is a live node as the allocator sees it.
type Worker struct {
	ID       string
	Capacity int  // weight ≥ 1 (a smaller value is treated as 1)
	Draining bool // keeps what it has until moved, gets nothing new
}

// PlanInput is everything the allocator looks at. Workers not listed are dead.
//
// Duplicates are resolved without regard to input order, so that a shuffled input gives
// the same plan: a worker id listed twice keeps its non-draining entry, then the smaller
// capacity; a task list listed twice keeps the larger partition count; a partition
// listed twice keeps the first row in the order (State, Owner, Target).
type PlanInput struct {
	TaskLists []TaskList
	Workers   []Worker
	// Current rows; only Partition, Owner, State and Target are read. Rows of partitions
	// that are not configured are ignored; a partition listed twice keeps the first row
	// in sorted order.
	//
	// How rows count: an Assigned row counts toward its owner's share if the owner is
	// eligible. A Releasing row with an eligible Target counts toward the Target's share
	// (so the handoff completes there) and is never moved again until it is released; while
	// its owner is alive it is in flight and uses the throttle. An Unassigned row with an
	// eligible Target goes back to that Target when the Target has room (the sticky hint
	// kept after an acknowledged release).
	Current []Assignment
	// MaxInFlight bounds partitions Releasing at once cluster-wide (0 = unlimited);
	// MaxInFlightPerWorker bounds those releasing from one worker.
	MaxInFlight          int
	MaxInFlightPerWorker int
}

// Placement is one partition's target owner ("" when no worker is eligible).
type Placement struct {
	Partition PartitionID
	Owner     string
}

// Move is a change of owner for one partition. From is the current owner ("" if none,
// or a dead owner's id).
type Move struct {
	Partition PartitionID
	From, To  string
}

// Plan is the allocator's answer. Its slices are sorted by partition; treat them as
// read-only.
type Plan struct {
	// Target: every configured partition exactly once, sorted, with its target owner.
	Target []Placement
	// Moves: every partition whose target owner differs from its current owner, sorted.
	// A partition whose target is "" (no eligible worker) is not a move. A Releasing row
	// is a move from its owner to its target until it is released.
	Moves []Move
	// Assign: partitions with no live owner (unassigned, owner dead or absent) to assign
	// now. Not throttled: nobody is processing them.
	Assign []Move
	// Release: moves away from a live owner to start now (state → Releasing), within the
	// throttle. Partitions already Releasing are never in here.
	Release []Move
	// Reason is set when partitions are left without an owner (no eligible worker).
	Reason string
	// Spread is the cluster-wide spread: max − min over eligible workers of
	// (total partitions held ÷ capacity), scaled ×1000 to stay integral.
	Spread int
	// InFlight is the number of partitions Releasing from a live owner before this plan
	// (they count against MaxInFlight).
	InFlight int
}

// PlanAssignments computes the target assignment and the actions to take now.
func PlanAssignments(in PlanInput) Plan { return planWithFlaws(in, 0) }

// planWithFlaws is PlanAssignments with deliberate bugs switched on (only the
// simulator's teeth tests set any); the node calls it with its config's flaws.
func planWithFlaws(in PlanInput, f flaw.Set) Plan {
	var a allocator
	return a.plan(in, f)
}

// aWorker is one distinct worker id, with the allocator's running state.
type aWorker struct {
	id       string
	cap      int64
	draining bool
	rank     int32 // tie-break order: by id (or input order under AllocUnsortedTieBreak)
	class    int32 // index into classes; -1 when not eligible
	member   int32 // position in its class's members
	rel      int64 // partitions targeted to it so far, less its class's offset

	// Per task list scratch, valid when stamp == the task list's number + 1.
	stamp  int32
	cur    int32 // partitions it holds now (rows counting toward its share)
	kept   int32 // partitions targeted to it so far in this task list
	extra  bool  // gets floor + 1 in this task list
	listed bool  // already in the deficit list

	inflight int32 // rows Releasing from it (it is alive, so they are in flight)
}

// aClass is the eligible workers of one capacity.
type aClass struct {
	cap     int64
	members []int32 // worker indices, sorted by rank
	offset  int64   // added to every member's rel: the floors given to all of them
	floor   int64   // of the current task list
	frac    bool    // of the current task list: P·cap/W is not whole

	// buckets[rel] is the bitset (bit m = members[m]) of the members with that rel, nil
	// when empty; count[rel] how many. Emptied bitsets are reused from spare.
	words   int
	buckets [][]uint64
	count   []int32
	spare   [][]uint64

	// Iterator over the members in (rel, rank) order, for one task list's extras.
	itRel  int
	itWord int
	itBits uint64
	peek   int32 // next unmarked member, -1 when exhausted
}

func (a *allocator) total(i int32) int64 {
	w := &a.workers[i]
	return w.rel + a.classes[w.class].offset
}

// add puts a member in bucket rel; remove takes it out.
func (cl *aClass) add(m int32, rel int64) {
	for int64(len(cl.buckets)) <= rel {
		cl.buckets = append(cl.buckets, nil)
		cl.count = append(cl.count, 0)
	}
	b := cl.buckets[rel]
	if b == nil {
		if n := len(cl.spare); n > 0 {
			b, cl.spare = cl.spare[n-1], cl.spare[:n-1]
		} else {
			b = make([]uint64, cl.words)
		}
		cl.buckets[rel] = b
	}
	b[m/64] |= 1 << (m % 64)
	cl.count[rel]++
}

func (cl *aClass) remove(m int32, rel int64) {
	b := cl.buckets[rel]
	b[m/64] &^= 1 << (m % 64)
	if cl.count[rel]--; cl.count[rel] == 0 {
		cl.buckets[rel] = nil
		cl.spare = append(cl.spare, b)
	}
}

// startIter positions the iterator before the first member in (rel, rank) order.
func (cl *aClass) startIter() {
	cl.itRel, cl.itWord, cl.itBits = -1, cl.words, 0
}

// next returns the next member in (rel, rank) order for which skip is false, or -1.
func (a *allocator) next(cl *aClass, skip func(int32) bool) int32 {
	for {
		for cl.itBits != 0 {
			b := bits.TrailingZeros64(cl.itBits)
			cl.itBits &= cl.itBits - 1
			i := cl.members[cl.itWord*64+b]
			if !skip(i) {
				return i
			}
		}
		cl.itWord++
		if cl.itWord >= cl.words {
			cl.itRel++
			for cl.itRel < len(cl.buckets) && cl.buckets[cl.itRel] == nil {
				cl.itRel++
			}
			if cl.itRel >= len(cl.buckets) {
				cl.itWord = cl.words
				return -1
			}
			cl.itWord = 0
		}
		cl.itBits = cl.buckets[cl.itRel][cl.itWord]
	}
}

type aTaskList struct {
	tl  TaskList
	off int // index of its partition 0 in the slot arrays
}

type tlKey struct{ d, n string }

type allocator struct {
	flaws   flaw.Set
	workers []aWorker
	byID    map[string]int32
	classes []aClass
	capSum  int64

	lastOwner   string
	lastOwnerIx int32
}

const (
	noOwner   = -1 // row has no owner (unassigned, deleted, absent row)
	deadOwner = -2 // row names an owner that is not a listed worker
)

func (a *allocator) lookup(id string) int32 {
	if id == "" {
		return noOwner
	}
	// Rows of one owner often come together; skip the map for a repeat.
	if id == a.lastOwner && a.lastOwnerIx != noOwner {
		return a.lastOwnerIx
	}
	ix, ok := a.byID[id]
	if !ok {
		return deadOwner
	}
	a.lastOwner, a.lastOwnerIx = id, ix
	return ix
}

func (a *allocator) byRank(x, y int32) int { return int(a.workers[x].rank) - int(a.workers[y].rank) }

func (a *allocator) eligible(ix int32) bool { return ix >= 0 && a.workers[ix].class >= 0 }

// lessLoad orders workers by partitions per capacity so far, then rank.
func (a *allocator) lessLoad(i, j int32) bool {
	wi, wj := &a.workers[i], &a.workers[j]
	l, r := a.total(i)*wj.cap, a.total(j)*wi.cap
	if l != r {
		return l < r
	}
	return wi.rank < wj.rank
}

func (a *allocator) setupWorkers(in PlanInput) {
	type entry struct {
		w   Worker
		pos int32
	}
	// Workers usually come sorted by id, without duplicates (the store lists them so):
	// then input order is id order and there is nothing to sort.
	sorted := true
	for i := 1; i < len(in.Workers) && sorted; i++ {
		sorted = in.Workers[i-1].ID < in.Workers[i].ID
	}
	var es []entry
	if !sorted {
		es = make([]entry, len(in.Workers))
		for i, w := range in.Workers {
			es[i] = entry{w, int32(i)}
		}
		slices.SortFunc(es, func(x, y entry) int {
			if c := strings.Compare(x.w.ID, y.w.ID); c != 0 {
				return c
			}
			if x.w.Draining != y.w.Draining {
				if !x.w.Draining {
					return -1
				}
				return 1
			}
			if x.w.Capacity != y.w.Capacity {
				if x.w.Capacity < y.w.Capacity {
					return -1
				}
				return 1
			}
			return int(x.pos) - int(y.pos)
		})
		es = slices.CompactFunc(es, func(x, y entry) bool { return x.w.ID == y.w.ID })
	}
	n := len(in.Workers)
	if !sorted {
		n = len(es)
	}
	// The map's keys are copied into one arena, so that the key comparisons of the many
	// owner lookups read neighbouring memory rather than strings scattered in the heap.
	size := 0
	for i := 0; i < n; i++ {
		if sorted {
			size += len(in.Workers[i].ID)
		} else {
			size += len(es[i].w.ID)
		}
	}
	var arena strings.Builder
	arena.Grow(size)
	a.workers = make([]aWorker, n)
	a.byID = make(map[string]int32, n)
	for i := 0; i < n; i++ {
		w, pos := Worker{}, int32(i)
		if sorted {
			w = in.Workers[i]
		} else {
			w, pos = es[i].w, es[i].pos
		}
		if w.Capacity < 1 {
			w.Capacity = 1
		}
		rank := int32(i)
		if a.flaws.Has(flaw.AllocUnsortedTieBreak) {
			// FLAW: ties broken in input order, so a shuffled input plans differently.
			rank = pos
		}
		a.workers[i] = aWorker{id: w.ID, cap: int64(w.Capacity), draining: w.Draining, rank: rank, class: -1}
		arena.WriteString(w.ID)
	}
	keys := arena.String()
	off := 0
	for i := range a.workers {
		l := len(a.workers[i].id)
		a.byID[keys[off:off+l]] = int32(i)
		off += l
	}
	a.lastOwnerIx = noOwner

	// Classes by capacity (few distinct values, kept sorted by insertion); members in
	// rank order, all in bucket 0.
	var caps []int64
	for i := range a.workers {
		w := &a.workers[i]
		if w.draining {
			continue
		}
		if c, found := slices.BinarySearch(caps, w.cap); !found {
			caps = slices.Insert(caps, c, w.cap)
		}
	}
	a.classes = make([]aClass, len(caps))
	for c, cp := range caps {
		a.classes[c].cap = cp
	}
	order := make([]int32, 0, len(a.workers))
	for i := range a.workers {
		if !a.workers[i].draining {
			order = append(order, int32(i))
		}
	}
	if a.flaws.Has(flaw.AllocUnsortedTieBreak) {
		slices.SortFunc(order, a.byRank)
	}
	for _, i := range order {
		w := &a.workers[i]
		c, _ := slices.BinarySearch(caps, w.cap)
		w.class = int32(c)
		a.capSum += w.cap
		cl := &a.classes[c]
		cl.members = append(cl.members, i)
	}
	for c := range a.classes {
		cl := &a.classes[c]
		cl.words = (len(cl.members) + 63) / 64
		for m, i := range cl.members {
			a.workers[i].member = int32(m)
			cl.add(int32(m), 0)
		}
	}
}

// slot kinds of a partition's current row, as far as the plan's actions go.
const (
	kindFree     uint8 = iota // no live owner: assign (not throttled)
	kindHeld                  // Assigned to a live owner: moving it is a throttled release
	kindInFlight              // Releasing from a live owner: wait for the ack
	kindMask     uint8 = 3

	kindViaRelease uint8 = 4 // the holder is the eligible Target of a Releasing row
)

// derive reads one row: its current owner (worker index, noOwner or deadOwner), the
// eligible worker whose share it counts toward (-1: none), the eligible worker it should
// go back to after an acknowledged release (-1: none), and its kind.
func (a *allocator) derive(row *Assignment) (owner, holder, hint int32, kind uint8) {
	owner, holder, hint, kind = noOwner, -1, -1, kindFree
	switch row.State {
	case Assigned:
		owner = a.lookup(row.Owner)
		if owner >= 0 {
			kind = kindHeld
			if a.eligible(owner) {
				holder = owner
			}
		}
	case Releasing:
		owner = a.lookup(row.Owner)
		if owner >= 0 {
			kind = kindInFlight
		}
		if to := a.lookup(row.Target); a.eligible(to) {
			holder = to
			kind |= kindViaRelease
		}
	case Unassigned:
		if to := a.lookup(row.Target); a.eligible(to) {
			hint = to
		}
	}
	return owner, holder, hint, kind
}

func (a *allocator) plan(in PlanInput, f flaw.Set) Plan {
	a.flaws = f
	a.setupWorkers(in)

	// Task lists, sorted and deduplicated; zero-partition lists contribute nothing.
	tls := make([]aTaskList, 0, len(in.TaskLists))
	for _, tl := range in.TaskLists {
		if tl.Partitions > 0 {
			tls = append(tls, aTaskList{tl: tl})
		}
	}
	slices.SortFunc(tls, func(x, y aTaskList) int {
		if c := strings.Compare(x.tl.Domain, y.tl.Domain); c != 0 {
			return c
		}
		if c := strings.Compare(x.tl.Name, y.tl.Name); c != 0 {
			return c
		}
		return y.tl.Partitions - x.tl.Partitions
	})
	tls = slices.CompactFunc(tls, func(x, y aTaskList) bool { return x.tl.Domain == y.tl.Domain && x.tl.Name == y.tl.Name })
	n, maxP := 0, 0
	tlIx := make(map[tlKey]int32, len(tls))
	for i := range tls {
		tls[i].off = n
		n += tls[i].tl.Partitions
		maxP = max(maxP, tls[i].tl.Partitions)
		tlIx[tlKey{tls[i].tl.Domain, tls[i].tl.Name}] = int32(i)
	}

	// slot[s] is the index in in.Current of partition s's row, -1 when it has none.
	slot := make([]int32, n)
	for i := range slot {
		slot[i] = -1
	}
	// What each slot's row means, worked out in this one pass over the rows (they are
	// large; reading them once matters at a million): owner1, holder1 and hint1 hold a
	// worker index + 1, so that 0 means none without initialising the arrays (owner1 is
	// -1 for a dead owner); kind is the row's kind, plus kindViaRelease when its holder
	// is the Target of a Releasing row.
	owner1 := make([]int32, n)
	holder1 := make([]int32, n)
	hint1 := make([]int32, n)
	kind := make([]uint8, n)
	lastTL, lastD, lastN := int32(-1), "", ""
	for r := range in.Current {
		row := &in.Current[r]
		id := row.Partition
		if lastTL == -1 || id.Domain != lastD || id.TaskList != lastN {
			ix, ok := tlIx[tlKey{id.Domain, id.TaskList}]
			if !ok {
				ix = -1
			}
			lastTL, lastD, lastN = ix, id.Domain, id.TaskList
			if !ok {
				lastTL = -2 // remember the miss too
			}
		}
		if lastTL < 0 {
			continue
		}
		t := &tls[lastTL]
		if id.Partition < 0 || id.Partition >= t.tl.Partitions {
			continue
		}
		s := t.off + id.Partition
		if old := slot[s]; old < 0 || rowLess(row, &in.Current[old]) {
			slot[s] = int32(r)
			o, h, hn, k := a.derive(row)
			owner1[s], holder1[s], hint1[s], kind[s] = o+1, h+1, hn+1, k
		}
	}

	// tg[s] is slot s's target worker, -1 for none (set per task list below).
	tg := make([]int32, n)

	// Per task list scratch.
	holder := make([]int32, maxP)
	hint := make([]int32, maxP)
	inflightHeld := make([]bool, maxP)
	var touched, cands, deficit []int32

	var p Plan
	eligibleAny := a.capSum > 0
	for t := range tls {
		tl := &tls[t]
		P := tl.tl.Partitions
		stamp := int32(t + 1)
		touched = touched[:0]
		touch := func(i int32) {
			w := &a.workers[i]
			if w.stamp != stamp {
				w.stamp, w.cur, w.kept, w.extra, w.listed = stamp, 0, 0, false, false
				touched = append(touched, i)
			}
		}

		// 1. Who holds what, in-flight releases, hints.
		for k := 0; k < P; k++ {
			s := tl.off + k
			tg[s] = -1
			holder[k], hint[k], inflightHeld[k] = holder1[s]-1, hint1[s]-1, kind[s]&kindViaRelease != 0
			if kind[s]&kindMask == kindInFlight {
				a.workers[owner1[s]-1].inflight++
				p.InFlight++
			}
			if h := holder[k]; h >= 0 {
				touch(h)
				a.workers[h].cur++
			}
		}
		if !eligibleAny {
			continue
		}

		// 2. Quotas: floors per class, and R extra slots.
		R := int64(P)
		for c := range a.classes {
			cl := &a.classes[c]
			cl.floor = int64(P) * cl.cap / a.capSum
			cl.frac = int64(P)*cl.cap%a.capSum != 0
			R -= cl.floor * int64(len(cl.members))
			cl.offset += cl.floor
		}

		// 3. Sticky extras: to holders above their floor, fewest-so-far first.
		cands = cands[:0]
		for _, i := range touched {
			w := &a.workers[i]
			cl := &a.classes[w.class]
			if cl.frac && int64(w.cur) > cl.floor {
				cands = append(cands, i)
			}
		}
		if int64(len(cands)) > R {
			slices.SortFunc(cands, func(x, y int32) int {
				switch {
				case x == y:
					return 0
				case a.lessLoad(x, y):
					return -1
				}
				return 1
			})
			cands = cands[:R]
		}
		for _, i := range cands {
			a.workers[i].extra = true
		}
		R -= int64(len(cands))

		// 4. Free extras: to the eligible workers with the fewest so far.
		if R > 0 {
			marked := func(i int32) bool { w := &a.workers[i]; return w.stamp == stamp && w.extra }
			for c := range a.classes {
				cl := &a.classes[c]
				cl.peek = -1
				if cl.frac {
					cl.startIter()
					cl.peek = a.next(cl, marked)
				}
			}
			for ; R > 0; R-- {
				best := -1
				for c := range a.classes {
					if i := a.classes[c].peek; i >= 0 && (best < 0 || a.lessLoad(i, a.classes[best].peek)) {
						best = c
					}
				}
				if best < 0 {
					panic("helix: allocator invariant: fewer fractional workers than extra slots")
				}
				cl := &a.classes[best]
				i := cl.peek
				touch(i)
				a.workers[i].extra = true
				cl.peek = a.next(cl, marked)
			}
		}
		// The extras' totals grow by one: next bucket.
		for _, i := range touched {
			w := &a.workers[i]
			if w.extra {
				cl := &a.classes[w.class]
				cl.remove(w.member, w.rel)
				w.rel++
				cl.add(w.member, w.rel)
			}
		}

		quota := func(i int32) int32 {
			w := &a.workers[i]
			q := int32(a.classes[w.class].floor)
			if w.stamp == stamp && w.extra {
				q++
			}
			return q
		}

		// 5. Keep: each holder keeps up to its quota, Assigned rows first (lowest numbers
		// first), then Releasing rows headed to it. Giving away an in-flight row costs no
		// extra handoff, giving away an Assigned one does.
		for pass := 0; pass < 2; pass++ {
			wantInFlight := pass == 1
			for k := 0; k < P; k++ {
				h := holder[k]
				if h < 0 || inflightHeld[k] != wantInFlight {
					continue
				}
				if a.workers[h].kept < quota(h) {
					a.workers[h].kept++
					tg[tl.off+k] = h
				}
			}
		}
		// 6. Hints: an acknowledged release goes back to its intended target if it has room.
		for k := 0; k < P; k++ {
			s := tl.off + k
			if tg[s] >= 0 || hint[k] < 0 {
				continue
			}
			h := hint[k]
			if q := quota(h); q > 0 {
				touch(h)
				if a.workers[h].kept < q {
					a.workers[h].kept++
					tg[s] = h
				}
			}
		}
		// 7. The rest of the pool to the workers below quota, in rank order.
		deficit = deficit[:0]
		addDeficit := func(i int32) {
			touch(i)
			w := &a.workers[i]
			if !w.listed && w.kept < quota(i) {
				w.listed = true
				deficit = append(deficit, i)
			}
		}
		for _, i := range touched {
			addDeficit(i)
		}
		for c := range a.classes {
			if a.classes[c].floor > 0 {
				for _, i := range a.classes[c].members {
					addDeficit(i)
				}
			}
		}
		if !slices.IsSortedFunc(deficit, a.byRank) {
			slices.SortFunc(deficit, a.byRank)
		}
		d := 0
		for k := 0; k < P; k++ {
			s := tl.off + k
			if tg[s] >= 0 {
				continue
			}
			for a.workers[deficit[d]].kept >= quota(deficit[d]) {
				d++
			}
			a.workers[deficit[d]].kept++
			tg[s] = deficit[d]
		}
	}

	// Outputs, sized exactly.
	p.Target = make([]Placement, n)
	nMoves, nAssign, nRel := 0, 0, 0
	for s := 0; s < n; s++ {
		to := tg[s]
		if to < 0 {
			continue
		}
		switch kind[s] & kindMask {
		case kindFree:
			nAssign++
			nMoves++
		case kindHeld:
			if (owner1[s] - 1) != to {
				nRel++
				nMoves++
			}
		case kindInFlight:
			if (owner1[s] - 1) != to {
				nMoves++
			}
		}
	}
	p.Moves = make([]Move, 0, nMoves)
	// When every move is an assignment (planning from scratch, the common large case),
	// Assign is Moves: one large slice instead of two.
	sameAssign := nAssign == nMoves
	if !sameAssign {
		p.Assign = make([]Move, 0, nAssign)
	}
	relSlots := make([]int32, 0, nRel)
	relSrc := make([]int32, 0, nRel)
	for t := range tls {
		tl := &tls[t]
		for k := 0; k < tl.tl.Partitions; k++ {
			s := tl.off + k
			id := PartitionID{Domain: tl.tl.Domain, TaskList: tl.tl.Name, Partition: k}
			to := tg[s]
			toID := ""
			if to >= 0 {
				toID = a.workers[to].id
			}
			// Field by field, as in appendMove.
			pl := &p.Target[s]
			pl.Partition.Domain, pl.Partition.TaskList, pl.Partition.Partition = id.Domain, id.TaskList, k
			pl.Owner = toID
			if to < 0 {
				continue
			}
			o, kd := owner1[s]-1, kind[s]&kindMask
			if kd != kindFree && o == to {
				continue // stays where it is
			}
			from := ""
			switch {
			case o >= 0:
				from = a.workers[o].id
			case o == deadOwner:
				from = in.Current[slot[s]].Owner
			}
			p.Moves = appendMove(p.Moves, id, from, toID)
			switch kd {
			case kindFree:
				if !sameAssign {
					p.Assign = appendMove(p.Assign, id, from, toID)
				}
			case kindHeld:
				relSlots = append(relSlots, int32(len(p.Moves)-1))
				relSrc = append(relSrc, o)
			}
		}
	}
	if sameAssign {
		p.Assign = p.Moves
	}
	p.Release = a.throttle(in, p.Moves, relSlots, relSrc, p.InFlight)

	if n > 0 && !eligibleAny {
		if len(a.workers) == 0 {
			p.Reason = fmt.Sprintf("no eligible worker: no live workers; %d partitions left unassigned", n)
		} else {
			p.Reason = fmt.Sprintf("no eligible worker: all %d live workers are draining; %d partitions left without a new owner", len(a.workers), n)
		}
	}
	p.Spread = a.spread()
	return p
}

// appendMove appends to a slice with room for it, field by field: appending a whole
// Move goes through the bulk write barrier while the collector runs, which made this the
// most expensive line when planning a million partitions from scratch.
func appendMove(ms []Move, id PartitionID, from, to string) []Move {
	ms = ms[:len(ms)+1]
	m := &ms[len(ms)-1]
	m.Partition.Domain, m.Partition.TaskList, m.Partition.Partition = id.Domain, id.TaskList, id.Partition
	m.From, m.To = from, to
	return ms
}

// throttle picks the releases to start now. Candidates are Moves indices (sorted) with
// their source worker. With a cluster-wide bound it hands the free slots out one at a
// time to the source with the most releases still pending (ties by rank), which is what
// lets round after round finish in max(⌈moves/MaxInFlight⌉, ⌈most from one
// worker/MaxInFlightPerWorker⌉) rounds, the fewest the throttle allows.
func (a *allocator) throttle(in PlanInput, moves []Move, cand, src []int32, inflight int) []Move {
	G, L := in.MaxInFlight, in.MaxInFlightPerWorker
	if G <= 0 && L <= 0 {
		out := make([]Move, len(cand))
		for i, m := range cand {
			out[i] = moves[m]
		}
		return out
	}
	perWorker := func(i int32) int {
		if L <= 0 {
			return len(cand)
		}
		return max(0, L-int(a.workers[i].inflight))
	}
	// Group candidates by source, keeping partition order inside each group.
	start := make([]int32, len(a.workers)+1)
	for _, w := range src {
		start[w+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	byW := make([]int32, len(cand))
	fill := slices.Clone(start[:len(a.workers)])
	for j, w := range src {
		byW[fill[w]] = int32(j)
		fill[w]++
	}
	take := make([]bool, len(cand))
	nTake := 0
	if G <= 0 {
		for w := range a.workers {
			k := min(int(start[w+1]-start[w]), perWorker(int32(w)))
			for j := start[w]; j < start[w]+int32(k); j++ {
				take[byW[j]] = true
				nTake++
			}
		}
	} else {
		budget := G - inflight
		// Max-heap of sources by (pending, -rank).
		type srcState struct{ w, next, pending, room int32 }
		var h []srcState
		better := func(x, y srcState) bool {
			if x.pending != y.pending {
				return x.pending > y.pending
			}
			return a.workers[x.w].rank < a.workers[y.w].rank
		}
		up := func(p int) {
			for p > 0 {
				q := (p - 1) / 2
				if !better(h[p], h[q]) {
					return
				}
				h[p], h[q] = h[q], h[p]
				p = q
			}
		}
		down := func(p int) {
			for {
				l := 2*p + 1
				if l >= len(h) {
					return
				}
				m := l
				if r := l + 1; r < len(h) && better(h[r], h[l]) {
					m = r
				}
				if !better(h[m], h[p]) {
					return
				}
				h[p], h[m] = h[m], h[p]
				p = m
			}
		}
		for w := range a.workers {
			pend := start[w+1] - start[w]
			room := int32(min(perWorker(int32(w)), len(cand)))
			if pend > 0 && room > 0 {
				h = append(h, srcState{int32(w), start[w], pend, room})
				up(len(h) - 1)
			}
		}
		for ; budget > 0 && len(h) > 0; budget-- {
			top := &h[0]
			take[byW[top.next]] = true
			nTake++
			top.next++
			top.pending--
			top.room--
			if top.pending == 0 || top.room == 0 {
				h[0] = h[len(h)-1]
				h = h[:len(h)-1]
			}
			down(0)
		}
	}
	out := make([]Move, 0, nTake)
	for j, m := range cand {
		if take[j] {
			out = append(out, moves[m])
		}
	}
	return out
}

func (a *allocator) spread() int {
	if a.capSum == 0 {
		return 0
	}
	lo, hi := int64(-1), int64(-1)
	for i := range a.workers {
		w := &a.workers[i]
		if w.class < 0 {
			continue
		}
		v := a.total(int32(i)) * 1000 / w.cap
		if lo < 0 || v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
	}
	return int(hi - lo)
}

// rowLess is the order that picks which of two rows of one partition counts.
func rowLess(x, y *Assignment) bool {
	if x.State != y.State {
		return x.State < y.State
	}
	if x.Owner != y.Owner {
		return x.Owner < y.Owner
	}
	return x.Target < y.Target
}

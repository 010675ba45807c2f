package engine

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"sync"
)

// The allocator: a pure function from (task lists, live workers, current rows, throttle)
// to the target owner of every partition and the actions to take now.
//
// Balance has two levels. Per task list with P partitions and eligible workers of total
// capacity W, worker i of capacity w gets floor(P·w/W) partitions, or one more (an
// "extra") when P·w/W is not whole; and over all task lists together it holds the floor
// or the ceiling of its share of all partitions. Which workers get the extras of which
// task lists is decided for the whole cluster at once, so that both levels hold with the
// fewest moves: see alloc_extras.go. Then, per task list, each holder keeps what its
// quota allows (the fewest moves), acknowledged releases go back to their hinted target,
// and the rest of the partitions are dealt to the workers below quota in id order.
//
// Cost: workers are grouped by capacity into classes. Within a class every worker's
// floor is the same, so a class whose floor is 0 costs nothing per task list; only the
// workers that hold or receive partitions of a task list are touched. Dealing the free
// extras by need needs the workers of a class in (extras so far, id) order: a class
// keeps its members in buckets, each bucket a bitset over the members in id order, and
// an extra moves a bit to the next bucket (filed lazily: only the free extras read the
// buckets). Planning is therefore O(rows + partitions + task lists·classes·class
// size/64 + sticky cells), never O(partitions·workers).
//
// Constant factors (the budget is 5 ms for 100k partitions × 10k workers on one
// core): the rows are read once, into 8 bytes of scratch per partition; an owner is
// first guessed (the last owner found or the worker after it: runs of a settled
// assignment), then binary-searched, and only when many guesses miss is a map of the
// worker ids built; the plan itself is integers (Plan.Owner, PlanMove), not strings, so
// it costs 4 bytes per partition and 16 per move, and the garbage collector has nothing
// in it to scan. The working memory (about 30 bytes per partition) is reused from one
// plan to the next (allocScratch), and the short strings compared per row are compared
// inline (sameString). See bench/README.md for the numbers.

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
	//
	// Any order gives the same plan; rows sorted by partition, as a store lists them, are
	// read fastest (see lookup).
	Current []Assignment
	// MaxInFlight bounds partitions Releasing at once cluster-wide (0 = unlimited);
	// MaxInFlightPerWorker bounds those releasing from one worker.
	MaxInFlight          int
	MaxInFlightPerWorker int
	// Previous is the plan this caller made last (nil: none), so that a target is kept
	// while it is reached round by round. Where the rules leave a choice the allocator
	// takes the previous plan's: its extras (which workers get the ceiling of which task
	// list) when they still meet both levels of balance with the fewest moves, and a
	// partition left to the pool goes first to its previous target if that worker still
	// needs one. It never costs a move or balance: the plan is as minimal as without it.
	// A previous plan that no longer fits (task lists or workers changed, a plan of another
	// cluster) is ignored where it does not apply. Only a Plan returned by PlanAssignments
	// carries its extras; the allocator reads it and keeps no reference to it.
	Previous *Plan
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

// PlanMove is a Move in its Plan's compact form: indices into the Plan's TaskLists and
// Workers. Plan.Move expands it.
type PlanMove struct {
	TaskList  int32 // index into Plan.TaskLists
	Partition int32 // partition number within the task list
	From, To  int32 // indices into Plan.Workers; From is -1 when the partition had no owner
}

// Plan is the allocator's answer, in a compact form: a worker is an index into Workers
// and a partition a (task list, number) pair, so that a plan of a million partitions is
// a few arrays of integers. Spelling every partition out as strings (a PartitionID and
// an owner id: 56 bytes each) cost more than planning itself, and the garbage collector
// then had to scan it all; the Node reads only Assign and Release. Targets, TargetOf,
// Move and ExpandMoves give the spelled-out form. Treat the slices as read-only.
type Plan struct {
	// TaskLists: the task lists of the input that have partitions, sorted by (domain,
	// name), each once (a task list listed twice keeps the larger count). Every one of
	// their partitions is in the plan.
	TaskLists []TaskList
	// Workers: the ids the indices refer to: the live workers sorted by id, then the
	// dead owners that moves come from, sorted.
	Workers []string
	// Owner[t][k] is the target owner (an index into Workers) of partition k of
	// TaskLists[t], or -1 when no worker is eligible.
	Owner [][]int32
	// Moves: every partition whose target owner differs from its current owner, sorted.
	// A partition whose target is none (no eligible worker) is not a move. A Releasing row
	// is a move from its owner to its target until it is released.
	Moves []PlanMove
	// Assign: partitions with no live owner (unassigned, owner dead or absent) to assign
	// now. Not throttled: nobody is processing them.
	Assign []PlanMove
	// Release: moves away from a live owner to start now (state → Releasing), within the
	// throttle. Partitions already Releasing are never in here.
	Release []PlanMove
	// Reason is set when partitions are left without an owner (no eligible worker), or
	// when the cluster-wide level of balance is only met best effort (a safeguard that
	// should never fire: see alloc_repair.go).
	Reason string
	// Spread is the cluster-wide spread: max − min over eligible workers of
	// (total partitions held ÷ capacity), scaled ×1000 to stay integral.
	Spread int
	// InFlight is the number of partitions Releasing from a live owner before this plan
	// (they count against MaxInFlight).
	InFlight int

	// extraOff, extraW: the extras this plan chose (see alloc_extras.go): the workers
	// given the ceiling of TaskLists[t] are extraW[extraOff[t]:extraOff[t+1]]. Kept for
	// a next plan that gets this one as PlanInput.Previous (alloc_previous.go); O(extras),
	// never more than the partitions.
	extraOff, extraW []int32
}

// WorkerID is the id of worker index i, "" for -1.
func (p Plan) WorkerID(i int32) string {
	if i < 0 {
		return ""
	}
	return p.Workers[i]
}

// Move spells m out.
func (p Plan) Move(m PlanMove) Move {
	t := &p.TaskLists[m.TaskList]
	return Move{
		Partition: PartitionID{Domain: t.Domain, TaskList: t.Name, Partition: int(m.Partition)},
		From:      p.WorkerID(m.From),
		To:        p.WorkerID(m.To),
	}
}

// ExpandMoves spells out a list of moves (Moves, Assign or Release); nil when empty.
func (p Plan) ExpandMoves(ms []PlanMove) []Move {
	if len(ms) == 0 {
		return nil
	}
	out := make([]Move, len(ms))
	for i, m := range ms {
		out[i] = p.Move(m)
	}
	return out
}

// Partitions is the number of partitions in the plan.
func (p Plan) Partitions() int {
	n := 0
	for _, t := range p.TaskLists {
		n += t.Partitions
	}
	return n
}

// Targets spells out the target of every partition, sorted, each once: what `helix
// plan` prints. It allocates 56 bytes per partition; the Node never needs it.
func (p Plan) Targets() []Placement {
	out := make([]Placement, 0, p.Partitions())
	for t := range p.TaskLists {
		tl := &p.TaskLists[t]
		for k, o := range p.Owner[t] {
			out = append(out, Placement{
				Partition: PartitionID{Domain: tl.Domain, TaskList: tl.Name, Partition: k},
				Owner:     p.WorkerID(o),
			})
		}
	}
	return out
}

// TargetOf is the target owner of one partition: "" when no worker is eligible or the
// partition is not in the plan.
func (p Plan) TargetOf(id PartitionID) string {
	t, found := slices.BinarySearchFunc(p.TaskLists, &id, cmpTaskList)
	if !found || id.Partition < 0 || id.Partition >= len(p.Owner[t]) {
		return ""
	}
	return p.WorkerID(p.Owner[t][id.Partition])
}

// PlanAssignments computes the target assignment and the actions to take now.
func PlanAssignments(in PlanInput) Plan {
	s := scratchPool.Get().(*allocScratch)
	p := planWith(s, in)
	scratchPool.Put(s)
	return p
}

// planWith plans with the scratch memory s (the coordinator keeps its own).
func planWith(s *allocScratch, in PlanInput) Plan {
	a := allocator{s: s}
	return a.plan(in)
}

// allocScratch is the allocator's working memory that does not outlive a plan: at 100k
// partitions × 10k workers about 3 MB, which allocated afresh for every plan cost a
// fifth of the plan's time in clearing new memory and in the garbage collections it
// brought on (each of which also scans the caller's rows). Plans reuse it through
// scratchPool, or, in a coordinator, through its own (see coordinator.scratch). Nothing
// in it carries over: every use takes its slices through grow,
// which clears them, or overwrites every element it reads.
type allocScratch struct {
	workers            []aWorker
	slots              []aSlot
	cells              []xCell
	wOff, wCells, fill []int32
	order, dirty       []int32
	moves              []PlanMove // plan: every move, From not yet spelled for dead owners
	held, heldFrom     []int32    // plan: the moves away from a live Assigned owner, and that owner
	free, takers       []int32
	takersDone, gives  []bool
	short              []int32 // dealExtras: per task list, extras that found no worker
	// extras' slices (alloc_extras.go); hints and xW are kept after use for their capacity.
	R, sT, cOff, hOff, xOff, xW, hints []int32
	P                                  []int
	flags                              []uint8
	// the previous plan's indices mapped to this plan's (alloc_previous.go).
	prevT, prevW, prevCnt []int32
	prevHas               []bool // per worker: the previous plan knows it
}

var scratchPool = sync.Pool{New: func() any { return new(allocScratch) }}

// grow returns (*buf)[:n], zeroed, reallocating *buf only when it is too small.
func grow[T any](buf *[]T, n int) []T {
	if cap(*buf) < n {
		*buf = make([]T, n, n+n/8)
		return *buf
	}
	*buf = (*buf)[:n]
	clear(*buf)
	return *buf
}

// aWorker is one distinct worker (its id is allocator.ids at the same index), with the
// allocator's running state.
type aWorker struct {
	cap      int64
	rel      int32 // its extras over all task lists (its total less its class offset: the sum of its floors)
	brel     int32 // the rel it is filed under in its class's buckets (see syncBuckets)
	rank     int32 // tie-break order: by id (or input order under AllocUnsortedTieBreak)
	class    int32 // index into classes; -1 when not eligible
	member   int32 // position in its class's members
	inflight int32 // rows Releasing from it (it is alive, so they are in flight)
	draining bool
	dirty    bool  // in allocator.dirty: rel != brel
	cnt      int32 // its sticky cells (see alloc_extras.go)

	// Per task list scratch, valid when stamp == allocator.stamp.
	stamp  int32
	cur    int32 // solveExtras: partitions it holds now (rows counting toward its share)
	kept   int32 // partitions targeted to it so far in this task list
	need   int32 // once listed: partitions it still gets from the pool
	extra  bool  // gets floor + 1 in this task list
	listed bool  // already in the deficit list
}

// aClass is the eligible workers of one capacity.
type aClass struct {
	cap     int64
	members []int32 // worker indices, sorted by rank
	offset  int64   // added to every member's rel: the floors given to all of them
	floor   int64   // of the current task list
	frac    bool    // of the current task list: P·cap/W is not whole
	lo, hi  int64   // cluster-wide: every member's extras over all task lists (alloc_extras.go)

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
	// Where the iterator found peek: its bucket and word.
	peekRel, peekWord int
}

// bucketMove is a pending move of the members in mask (bits of word word) from bucket
// rel of class class to bucket rel + 1 (see takeFiled).
type bucketMove struct {
	class, rel, word int32
	mask             uint64
}

func (a *allocator) total(i int32) int64 {
	w := &a.workers[i]
	return int64(w.rel) + a.classes[w.class].offset
}

// add puts a member in bucket rel; remove takes it out.
func (cl *aClass) add(m int32, rel int32) {
	if int(rel) < len(cl.buckets) {
		if b := cl.buckets[rel]; b != nil {
			b[uint32(m)/64] |= 1 << (uint32(m) % 64)
			cl.count[rel]++
			return
		}
	}
	cl.addNew(m, rel)
}

// addNew is add to a bucket that is empty.
func (cl *aClass) addNew(m int32, rel int32) {
	for len(cl.buckets) <= int(rel) {
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
	b[uint32(m)/64] |= 1 << (uint32(m) % 64)
	cl.count[rel]++
}

func (cl *aClass) remove(m int32, rel int32) {
	b := cl.buckets[rel]
	b[uint32(m)/64] &^= 1 << (uint32(m) % 64)
	if cl.count[rel]--; cl.count[rel] == 0 {
		cl.buckets[rel] = nil
		cl.spare = append(cl.spare, b)
	}
}

// startIter positions the iterator before the first member in (rel, rank) order.
func (cl *aClass) startIter() {
	cl.itRel, cl.itWord, cl.itBits = -1, cl.words, 0
}

// next returns the next member in (rel, rank) order that is not already an extra of
// the current task list, or -1.
func (a *allocator) next(cl *aClass) int32 {
	for {
		for cl.itBits != 0 {
			b := bits.TrailingZeros64(cl.itBits)
			cl.itBits &= cl.itBits - 1
			i := cl.members[cl.itWord*64+b]
			if w := &a.workers[i]; w.stamp != a.stamp || !w.extra {
				cl.peekRel, cl.peekWord = cl.itRel, cl.itWord
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
	off int // the slot of its partition 0
}

// tlFinder finds the slot of a row's partition. Rows come sorted, so consecutive rows
// share a task list: it remembers the last one (a miss too) and compares the row's
// names with it; when they change it tries the next task list, then binary search.
type tlFinder struct {
	tls  []aTaskList // sorted by (domain, name), each once
	last int32       // index into tls; -1 before the first row, -2 after a task list not configured
	next int         // the task list after the last one found
	d, n string
}

// slot returns the slot of id, or -1 when its task list is not configured or the number
// is out of range.
func (f *tlFinder) slot(id *PartitionID) int {
	if f.last == -1 || !sameString(id.TaskList, f.n) || !sameString(id.Domain, f.d) {
		f.last, f.d, f.n = -2, id.Domain, id.TaskList
		if nx := f.next; nx < len(f.tls) && f.tls[nx].tl.Domain == id.Domain && f.tls[nx].tl.Name == id.TaskList {
			f.last = int32(nx)
		} else if i, ok := slices.BinarySearchFunc(f.tls, id, func(t aTaskList, id *PartitionID) int {
			return cmpTaskList(t.tl, id)
		}); ok {
			f.last = int32(i)
		}
		if f.last >= 0 {
			f.next = int(f.last) + 1
		}
	}
	if f.last < 0 {
		return -1
	}
	t := &f.tls[f.last]
	if id.Partition < 0 || id.Partition >= t.tl.Partitions {
		return -1
	}
	return t.off + id.Partition
}

type allocator struct {
	s         *allocScratch // nil: allocate afresh (tests)
	forceFast bool          // tests: never solve the extras exactly unless the fast path fails
	lastExact bool          // tests: the extras were solved exactly
	prev      *Plan         // PlanInput.Previous where it applies (alloc_previous.go), else nil
	repair    repairInfo    // tests: knobs and counts of steps 3 and 4 (alloc_repair.go)
	ids       []string      // the distinct worker ids, sorted: worker i is ids[i]
	workers   []aWorker
	classes   []aClass
	capSum    int64

	// Rows counting toward (or hinting at) an eligible worker, and rows in flight: upper
	// bounds (a partition listed twice counts twice); zero lets passes be skipped.
	holds, inflightRows int

	// Owner lookups: the last worker found (noOwner at first), the binary searches made
	// so far, and the map that replaces them once there are many (nil until then).
	lastOwnerIx int32
	stepped     bool // the last guess that hit was "the worker after the last one": try it first
	searches    int
	byID        map[string]int32

	// Per task list: its stamp (its index + 1; a worker's scratch is valid when its stamp
	// equals it), and lists of worker indices reused from one task list to the next.
	stamp                   int32
	touched, cands, deficit []int32
	// dirty lists the workers whose rel changed since they were last filed in their
	// class's buckets: only the free extras (step 4) read the buckets, and many plans
	// (every task list already balanced, as after a join) never need them.
	dirty []int32
	// moves: the bucket moves pending while one task list's free extras are dealt.
	moves []bucketMove
	// plan's step 8: the moves that are assignments, and whether one comes from a dead owner.
	nAssign  int
	deadFrom bool
}

// syncBuckets files the dirty workers under their current rel: one by one, or, when
// they are many, by refiling every member in order, which writes each bitset word in
// sequence rather than taking every worker out of one bucket and into another.
func (a *allocator) syncBuckets() {
	if 4*len(a.dirty) >= len(a.workers) {
		for _, i := range a.dirty {
			a.workers[i].dirty = false
		}
		a.dirty = a.dirty[:0]
		for c := range a.classes {
			cl := &a.classes[c]
			for r, b := range cl.buckets {
				if b != nil {
					clear(b)
					cl.spare = append(cl.spare, b)
					cl.buckets[r], cl.count[r] = nil, 0
				}
			}
			// add, by hand: this loop and the one below are the allocator's hottest, and
			// the compiler does not inline add.
			for m, i := range cl.members {
				w := &a.workers[i]
				rel := w.rel
				w.brel = rel
				if int(rel) < len(cl.buckets) && cl.buckets[rel] != nil {
					cl.buckets[rel][uint(m)/64] |= 1 << (uint(m) % 64)
					cl.count[rel]++
				} else {
					cl.addNew(int32(m), rel)
				}
			}
		}
		return
	}
	for _, i := range a.dirty {
		w := &a.workers[i]
		cl := &a.classes[w.class]
		cl.remove(w.member, w.brel)
		rel := w.rel
		w.brel, w.dirty = rel, false
		if int(rel) < len(cl.buckets) && cl.buckets[rel] != nil {
			cl.buckets[rel][uint32(w.member)/64] |= 1 << (uint32(w.member) % 64)
			cl.count[rel]++
		} else {
			cl.addNew(w.member, rel)
		}
	}
	a.dirty = a.dirty[:0]
}

const (
	noOwner   = -1 // row has no owner (unassigned, deleted, absent row)
	deadOwner = -2 // row names an owner that is not a listed worker
)

func (a *allocator) lookup(id string) int32 {
	if id == "" {
		return noOwner
	}
	// Rows come sorted by partition, and in an assignment this allocator made, runs of
	// partitions go to one worker (a task list with more partitions than workers) or to
	// workers next to each other in id order (the pool is dealt out in id order): try the
	// last owner found and the one after it first. A miss costs two short comparisons; a
	// hit saves a hash and a probe of a table too large for the L1 cache.
	// Which of the two hit last time is tried first, so a run costs one comparison.
	if l := a.lastOwnerIx; l >= 0 {
		n := l + 1
		if a.stepped && int(n) < len(a.ids) && sameString(a.ids[n], id) {
			a.lastOwnerIx = n
			return n
		}
		if sameString(a.ids[l], id) {
			a.stepped = false
			return l
		}
		if !a.stepped && int(n) < len(a.ids) && sameString(a.ids[n], id) {
			a.lastOwnerIx, a.stepped = n, true
			return n
		}
	}
	ix, ok := a.find(id)
	if !ok {
		return deadOwner
	}
	a.lastOwnerIx = ix
	return ix
}

// find looks an id up by binary search over the sorted ids while few lookups have missed
// the guesses, and builds a map once that costs less than the searches to come: a plan
// that finds nearly every owner by guessing then never pays for hashing every worker id.
func (a *allocator) find(id string) (int32, bool) {
	if a.byID == nil {
		if a.searches < 64+len(a.ids)/4 {
			a.searches++
			i, ok := slices.BinarySearch(a.ids, id)
			return int32(i), ok
		}
		a.byID = make(map[string]int32, len(a.ids))
		for i, id := range a.ids {
			a.byID[id] = int32(i)
		}
	}
	ix, ok := a.byID[id]
	return ix, ok
}

func (a *allocator) byRank(x, y int32) int { return int(a.workers[x].rank) - int(a.workers[y].rank) }

func (a *allocator) eligible(ix int32) bool { return ix >= 0 && a.workers[ix].class >= 0 }

// newStamp starts the scratch of a new task list (every pass over the task lists takes
// new stamps, so no scratch survives from one pass to the next).
func (a *allocator) newStamp() {
	a.stamp++
	a.touched = a.touched[:0]
}

// touch starts worker i's scratch for the current task list, once.
func (a *allocator) touch(i int32) {
	w := &a.workers[i]
	if w.stamp != a.stamp {
		w.stamp, w.cur, w.kept, w.extra, w.listed = a.stamp, 0, 0, false, false
		a.touched = append(a.touched, i)
	}
}

// quota is what eligible worker i gets of the current task list: its class's floor, + 1
// when it has an extra slot.
func (a *allocator) quota(i int32) int32 {
	w := &a.workers[i]
	q := int32(a.classes[w.class].floor)
	if w.stamp == a.stamp && w.extra {
		q++
	}
	return q
}

// addDeficit lists worker i for the pool if it is below its quota, with what it needs.
func (a *allocator) addDeficit(i int32) {
	a.touch(i)
	w := &a.workers[i]
	if w.listed {
		return
	}
	if q := a.quota(i); w.kept < q {
		w.listed, w.need = true, q-w.kept
		a.deficit = append(a.deficit, i)
	}
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
	at := func(i int) (Worker, int32) {
		if sorted {
			return in.Workers[i], int32(i)
		}
		return es[i].w, es[i].pos
	}
	// The ids are copied into one arena, so that the comparisons of the many owner
	// lookups read neighbouring memory rather than strings scattered in the heap (and
	// the plan, which keeps them as Plan.Workers, holds one object rather than many).
	size := 0
	for i := 0; i < n; i++ {
		w, _ := at(i)
		size += len(w.ID)
	}
	var arena strings.Builder
	arena.Grow(size)
	for i := 0; i < n; i++ {
		w, _ := at(i)
		arena.WriteString(w.ID)
	}
	keys := arena.String()
	a.ids = make([]string, n, n+8) // room for a few dead owners in Plan.Workers
	a.workers = grow(&a.s.workers, n)
	off := 0
	var caps []int64 // distinct capacities of eligible workers, sorted
	nEligible := 0
	for i := 0; i < n; i++ {
		w, _ := at(i)
		if w.Capacity < 1 {
			w.Capacity = 1
		}
		rank := int32(i)
		a.ids[i] = keys[off : off+len(w.ID)]
		off += len(w.ID)
		a.workers[i] = aWorker{cap: int64(w.Capacity), draining: w.Draining, rank: rank, class: -1}
		if !w.Draining {
			nEligible++
			// Capacities are few and usually equal: check the last one before searching.
			if k := len(caps); k == 0 || caps[k-1] != int64(w.Capacity) {
				if c, found := slices.BinarySearch(caps, int64(w.Capacity)); !found {
					caps = slices.Insert(caps, c, int64(w.Capacity))
				}
			}
		}
	}
	a.lastOwnerIx = noOwner

	// Classes by capacity; members in rank order, all in bucket 0.
	a.classes = make([]aClass, len(caps))
	for c, cp := range caps {
		a.classes[c].cap = cp
	}
	order := grow(&a.s.order, nEligible)[:0]
	a.dirty = grow(&a.s.dirty, nEligible)[:0]
	for i := range a.workers {
		if !a.workers[i].draining {
			order = append(order, int32(i))
		}
	}
	if len(caps) == 1 {
		a.classes[0].members = order
	}
	for _, i := range order {
		w := &a.workers[i]
		c := 0
		if len(caps) > 1 {
			c, _ = slices.BinarySearch(caps, w.cap)
			a.classes[c].members = append(a.classes[c].members, i)
		}
		w.class = int32(c)
		a.capSum += w.cap
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

	kindViaRelease uint8 = 4  // the hold is the eligible Target of a Releasing row
	kindHint       uint8 = 8  // the hold is not a holder but a hint: the eligible Target of an Unassigned row
	kindSeen       uint8 = 16 // the slot has a row
	kindBits             = 5
)

// aSlot is what one partition's current row means, worked out in one pass over the rows
// (they are large; reading them once matters at a million), in 8 bytes: the zero value
// means "no row", so the array needs no initialisation.
type aSlot struct {
	// owner is the current owner: worker index + 1; 0 for none; -(r+1) for an owner
	// that is not a listed worker, r being the row (which names it).
	owner int32
	// hk is (hold + 1) << kindBits | kind, hold being the eligible worker the row counts
	// toward (its Assigned owner, or with kindViaRelease the Target of a Releasing row)
	// or with kindHint the eligible worker it should go back to after an acknowledged
	// release; -1 for none. (Worker indices thus have 27 bits: 134 million workers.)
	hk uint32
}

func (s aSlot) kind() uint8 { return uint8(s.hk & (1<<kindBits - 1)) }

func (s aSlot) hold() int32 { return int32(s.hk>>kindBits) - 1 }

// ownerIx is the current owner: a worker index, noOwner or deadOwner.
func (s aSlot) ownerIx() int32 {
	switch {
	case s.owner > 0:
		return s.owner - 1
	case s.owner == 0:
		return noOwner
	}
	return deadOwner
}

// derive reads one row: its current owner (worker index, noOwner or deadOwner), the
// eligible worker whose share it counts toward or that it hints at (-1: none), and its
// kind.
func (a *allocator) derive(row *Assignment) (owner, hold int32, kind uint8) {
	owner, hold, kind = noOwner, -1, kindFree
	switch row.State {
	case Assigned:
		owner = a.lookup(row.Owner)
		if owner >= 0 {
			kind = kindHeld
			if a.eligible(owner) {
				hold = owner
			}
		}
	case Releasing:
		owner = a.lookup(row.Owner)
		if owner >= 0 {
			kind = kindInFlight
		}
		if to := a.lookup(row.Target); a.eligible(to) {
			hold = to
			kind |= kindViaRelease
		}
	case Unassigned:
		if to := a.lookup(row.Target); a.eligible(to) {
			hold = to
			kind |= kindHint
		}
	}
	return owner, hold, kind
}

// readRows fills the slots from the rows, in one pass.
func (a *allocator) readRows(rows []Assignment, slots []aSlot, f tlFinder) {
	// rowOf[s] is the row that counts for slot s; kept only once a partition turns out
	// to be listed twice (never, for rows read from a store), as the slots alone do not
	// say which row they came from.
	var rowOf []int32
	start := f
	for r := range rows {
		row := &rows[r]
		// The common case inline: the row's task list is the last row's (slot's first test).
		s := -1
		if id := &row.Partition; f.last >= 0 && sameString(id.TaskList, f.n) && sameString(id.Domain, f.d) {
			if t := &f.tls[f.last]; uint(id.Partition) < uint(t.tl.Partitions) {
				s = t.off + id.Partition
			}
		} else {
			s = f.slot(id)
		}
		if s < 0 {
			continue
		}
		sl := &slots[s]
		if sl.kind()&kindSeen != 0 {
			if rowOf == nil {
				// The rows before this one listed every partition at most once.
				rowOf = make([]int32, len(slots))
				g := start
				for q := 0; q < r; q++ {
					if s := g.slot(&rows[q].Partition); s >= 0 {
						rowOf[s] = int32(q)
					}
				}
			}
			if !rowLess(row, &rows[rowOf[s]]) {
				continue
			}
		}
		if rowOf != nil {
			rowOf[s] = int32(r)
		}
		var o, h int32
		var k uint8
		if l := a.lastOwnerIx + 1; row.State == Assigned && a.stepped && l > 0 && int(l) < len(a.ids) && sameString(a.ids[l], row.Owner) {
			// derive's common case inline: an Assigned row whose owner is the worker after
			// the last row's (lookup's first guess).
			a.lastOwnerIx = l
			o, h, k = l, -1, kindHeld
			if a.eligible(l) {
				h = l
			}
		} else {
			o, h, k = a.derive(row)
		}
		if o == deadOwner {
			o = -int32(r) - 2
		}
		sl.owner, sl.hk = o+1, uint32(h+1)<<kindBits|uint32(k|kindSeen)
		if h >= 0 {
			a.holds++ // at least as many as the sticky cells (alloc_extras.go)
		}
		if k&kindMask == kindInFlight {
			a.inflightRows++
		}
	}
}

func (a *allocator) plan(in PlanInput) Plan {
	if a.s == nil {
		a.s = new(allocScratch)
	}
	a.s.moves, a.s.held, a.nAssign, a.deadFrom = a.s.moves[:0], a.s.held[:0], 0, false
	a.setupWorkers(in)

	// Task lists, sorted and deduplicated; zero-partition lists contribute nothing.
	tls := make([]aTaskList, 0, len(in.TaskLists))
	for _, tl := range in.TaskLists {
		if tl.Partitions > 0 {
			tls = append(tls, aTaskList{tl: tl})
		}
	}
	slices.SortFunc(tls, func(x, y aTaskList) int {
		if c := compareTaskLists(x.tl, y.tl); c != 0 {
			return c
		}
		return y.tl.Partitions - x.tl.Partitions
	})
	tls = slices.CompactFunc(tls, func(x, y aTaskList) bool { return x.tl.Domain == y.tl.Domain && x.tl.Name == y.tl.Name })
	n := 0
	var p Plan
	p.TaskLists = make([]TaskList, len(tls))
	for i := range tls {
		tls[i].off = n
		n += tls[i].tl.Partitions
		p.TaskLists[i] = tls[i].tl
	}

	a.usePrevious(in.Previous, tls)
	slots := grow(&a.s.slots, n)
	a.readRows(in.Current, slots, tlFinder{tls: tls, last: -1})

	// own[s] is slot s's target worker, -1 for none (set per task list below); Plan.Owner
	// cuts it into task lists.
	own := make([]int32, n)
	p.Owner = make([][]int32, len(tls))

	eligibleAny := a.capSum > 0
	var x *extras
	if eligibleAny {
		x = a.solveExtras(tls, slots)
		p.InFlight, p.Reason = x.inflight, x.reason
	}
	for t := range tls {
		tl := &tls[t]
		P := tl.tl.Partitions
		ss := slots[tl.off : tl.off+P]
		tg := own[tl.off : tl.off+P : tl.off+P]
		p.Owner[t] = tg
		a.newStamp()

		// 1. In-flight releases, and flags that let later passes be skipped when they
		// have nothing to do, as for most task lists of a settled cluster. With eligible
		// workers solveExtras has read them already, in its pass over the rows.
		for k := range tg {
			tg[k] = -1
		}
		if !eligibleAny {
			for _, sl := range ss {
				if sl.kind()&kindMask == kindInFlight {
					a.workers[sl.owner-1].inflight++
					p.InFlight++
				}
			}
			continue
		}
		flags := x.flags[t]

		// 2. Quotas: the class floors, + 1 for the workers solveExtras gave an extra.
		a.classQuotas(P)
		for _, c := range x.cells[x.cOff[t]:x.cOff[t+1]] {
			if c.on {
				a.touch(c.w)
				a.workers[c.w].extra = true
			}
		}
		for _, i := range x.xW[x.xOff[t]:x.xOff[t+1]] {
			a.touch(i)
			a.workers[i].extra = true
		}

		// 5. Keep: each holder keeps up to its quota, Assigned rows first (lowest numbers
		// first), then Releasing rows headed to it. Giving away an in-flight row costs no
		// extra handoff, giving away an Assigned one does.
		placed := 0
		for pass := uint8(0); pass < 2; pass++ {
			want := pass * kindViaRelease
			if want != 0 && flags&kindViaRelease == 0 {
				break
			}
			for k, sl := range ss {
				h := sl.hold()
				if h < 0 || sl.kind()&(kindHint|kindViaRelease) != want {
					continue
				}
				a.touch(h)
				if w := &a.workers[h]; w.kept < a.quota(h) {
					w.kept++
					tg[k] = h
					placed++
				}
			}
		}
		// 6. Hints: an acknowledged release goes back to its intended target if it has room.
		for k, sl := range ss {
			if flags&kindHint == 0 {
				break
			}
			if tg[k] >= 0 || sl.kind()&kindHint == 0 {
				continue
			}
			h := sl.hold()
			if q := a.quota(h); q > 0 {
				a.touch(h)
				if w := &a.workers[h]; w.kept < q {
					w.kept++
					tg[k] = h
					placed++
				}
			}
		}
		if placed < P { // else nothing is left for the pool
			a.dealPool(t, tg)
		}
		// 8. The moves: every partition whose target is not its current live owner.
		for k, to := range tg {
			sl := ss[k]
			kd := sl.kind() & kindMask
			if to < 0 || (kd != kindFree && sl.owner-1 == to) {
				continue
			}
			// From: the owner's index, -1 for none, -(r+2) for a dead owner named by row
			// r (outputs gives it its index).
			from := sl.owner - 1
			a.s.moves = append(a.s.moves, PlanMove{TaskList: int32(t), Partition: int32(k), From: from, To: to})
			switch kd {
			case kindFree:
				a.nAssign++
				a.deadFrom = a.deadFrom || from < noOwner
			case kindHeld:
				a.s.held = append(a.s.held, int32(len(a.s.moves)-1))
			}
		}
	}

	if x != nil { // keep what the appends grew for the next plan
		p.extraOff, p.extraW = x.solution()
		a.s.hints, a.s.xW = x.hints[:0], x.xW[:0]
	}
	return a.outputs(in, p, len(slots), eligibleAny)
}

// dealPool is step 7 of plan: the partitions of task list t that no holder kept (tg -1)
// go to the workers below quota: first to their previous target (poolToPrevious), the
// rest in rank order.
func (a *allocator) dealPool(t int, tg []int32) {
	a.deficit = a.deficit[:0]
	for _, i := range a.touched { // all touched already: the loop does not grow it
		a.addDeficit(i)
	}
	for c := range a.classes {
		if a.classes[c].floor > 0 {
			for _, i := range a.classes[c].members {
				a.addDeficit(i)
			}
		}
	}
	for j := 1; j < len(a.deficit); j++ {
		if a.workers[a.deficit[j-1]].rank > a.workers[a.deficit[j]].rank {
			slices.SortFunc(a.deficit, a.byRank)
			break
		}
	}
	if a.prev != nil {
		a.poolToPrevious(t, tg)
	}
	d := 0
	for k := range tg {
		if tg[k] >= 0 {
			continue
		}
		for a.workers[a.deficit[d]].need == 0 {
			d++
		}
		a.workers[a.deficit[d]].need--
		tg[k] = a.deficit[d]
	}
}

// outputs fills the plan's moves from those plan collected in a.s.moves (in partition
// order, so sorted), and the rest of the plan's fields.
func (a *allocator) outputs(in PlanInput, p Plan, n int, eligibleAny bool) Plan {
	moves := a.s.moves
	// The dead owners that moves come from get indices after the live workers, in id
	// order.
	p.Workers = a.ids
	var dead map[string]int32
	if a.deadFrom {
		dead = map[string]int32{}
		for _, m := range moves {
			if m.From < noOwner {
				dead[in.Current[-m.From-2].Owner] = 0
			}
		}
		names := make([]string, 0, len(dead))
		for id := range dead {
			names = append(names, id)
		}
		slices.Sort(names)
		p.Workers = slices.Grow(p.Workers, len(names))
		for _, id := range names {
			dead[id] = int32(len(p.Workers))
			p.Workers = append(p.Workers, id)
		}
	}
	spell := func(m PlanMove) PlanMove {
		if m.From < noOwner {
			m.From = dead[in.Current[-m.From-2].Owner]
		}
		return m
	}

	// Sized exactly. When every move is an assignment (planning from scratch, the common
	// large case), Assign is Moves.
	p.Moves = make([]PlanMove, len(moves))
	copy(p.Moves, moves)
	if a.deadFrom {
		for i := range p.Moves {
			p.Moves[i] = spell(p.Moves[i])
		}
	}
	if a.nAssign == len(moves) {
		p.Assign = p.Moves
	} else {
		p.Assign = make([]PlanMove, 0, a.nAssign)
		for _, m := range moves {
			if m.From < 0 {
				p.Assign = append(p.Assign, spell(m))
			}
		}
	}
	relSlots := a.s.held
	relSrc := grow(&a.s.heldFrom, len(relSlots))
	for i, j := range relSlots {
		relSrc[i] = p.Moves[j].From
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

// throttle picks the releases to start now. Candidates are Moves indices (sorted) with
// their source worker. With a cluster-wide bound it hands the free slots out one at a
// time to the source with the most releases still pending (ties by rank), which is what
// lets round after round finish in max(⌈moves/MaxInFlight⌉, ⌈most from one
// worker/MaxInFlightPerWorker⌉) rounds, the fewest the throttle allows.
func (a *allocator) throttle(in PlanInput, moves []PlanMove, cand, src []int32, inflight int) []PlanMove {
	G, L := in.MaxInFlight, in.MaxInFlightPerWorker
	if G <= 0 && L <= 0 {
		out := make([]PlanMove, len(cand))
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
	out := make([]PlanMove, 0, nTake)
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

// cmpTaskList orders a task list against a partition's task list, by (domain, name).
func cmpTaskList(t TaskList, id *PartitionID) int {
	if c := strings.Compare(t.Domain, id.Domain); c != 0 {
		return c
	}
	return strings.Compare(t.Name, id.TaskList)
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

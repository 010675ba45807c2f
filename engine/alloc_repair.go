package engine

// Step 3 of the extras problem (see the top of alloc_extras.go): the repair, for when
// step 2's greedy paints itself into a corner.
//
// The extras problem is a flow: source → task list t (Rt) → worker i (1, where t's share
// of i's class is not whole) → sink (lo_k), plus → X (hi_k − lo_k) → sink (K). A plan
// meeting both levels is a flow that fills every source arc. One always exists: the
// fractional shares x(t,i) = Pt·wi/W − ⌊Pt·wi/W⌋ fill every source arc and keep every
// worker's sum between lo_k and hi_k, and a flow problem with integral bounds that has a
// fractional solution has an integral one. So Ford–Fulkerson from any partial assignment
// finishes it: while an extra is unplaced, an augmenting path exists. That is the repair:
// step 2's greedy is run to the end (extras that find no worker are counted, not a
// failure), then each unplaced extra of t is placed by a path
//
//	t → i₁ (may take t, has no room) → i₁ gives up its extra of t₁ → t₁ → i₂ … → iₙ
//
// where iₙ is below lo_k, or below hi_k while fewer than K workers are above lo_k; or the
// path passes through X: a worker at lo_k takes hi_k and one above lo_k steps down by
// giving up an extra, as in augmentSticky. A worker below lo_k needs no path of its own:
// once every extra is placed, ΣRt = Σ lo_k + K extras on workers each at most lo_k + 1
// with at most K above lo_k leave none below.
//
// Fewest moves. Cost = −(extras on sticky cells). Steps 1 and 2 end with as many sticky
// extras as any assignment within the workers' bounds can have (step 1's maximum), so the
// partial assignment costs the least of any with as many extras placed, and a cheapest
// augmenting path keeps that true (successive shortest paths): the plan then moves the
// fewest partitions. A path costs 0 when every extra it makes a worker give up is free
// (not on a sticky cell); while no sticky extra has been lost, none costs less. The
// search is a 0-1 BFS over the number of sticky extras given up, so it finds such a path
// whenever one exists. When none exists it takes one that gives up the fewest sticky
// extras; that may or may not be the cheapest path (a sticky extra given up can be won
// back by a sticky cell taken), so the plan may move more than the fewest, and
// repairInfo counts the case. Both balance levels hold either way.
//
// Cost. A BFS enumerates a task list's candidate workers class by class (only classes
// whose share of it is not whole), through a per-class skip list of the members not yet
// reached ("next unvisited member", a union-find with path halving), so each worker is
// reached once per BFS and a BFS costs O(T + N + ΣRt) at worst, usually far less (it stops
// at the first worker with room). Paths are needed only for the extras the greedy left
// over, which are few.
//
// A repair that lost sticky extras is replaced by the exact solver where the table is
// small (≤ exactFallbackCells): large plans may then move a few more partitions than the
// fewest (measured on small inputs forced through the repair: 8 of 537 repairs moved one
// more), small ones never do.
//
// Step 4, the last resort, never runs if the argument above holds; it is there so that a
// bug cannot stop the coordinator. A small table (≤ exactFallbackCells) is solved exactly;
// a large one gets every task list balanced (its remaining extras on any workers that may
// take them, neediest first), the cluster-wide level best effort, and Plan.Reason says
// so. exactExtras' explicit table costs about 50 bytes a cell and its time grows faster
// than the cells (see exactFallbackCells): at 100k task lists × 10k workers (10⁹ cells)
// it would run out of memory, and at 65k cells it already takes half a minute.

import (
	"fmt"
)

// exactFallbackCells bounds the table exactExtras may solve as a last resort. Its cost
// grows much faster than the cells (Bellman–Ford, then a Dijkstra per phase): measured
// on churned clusters (2026-12, this 2-core machine), about 13 ms at 1k cells, 110 ms at
// 4k, 0.7 s at 10k and 25–30 s at 65k. 1k cells stays within a plan's budget; beyond it
// the best effort is safer than a stall past the lease.
const exactFallbackCells = 1 << 10

// repairInfo is what tests set and read of steps 3 and 4 (allocator.repair).
type repairInfo struct {
	noExact  bool // tests: the last resort never calls exactExtras
	noRepair bool // tests: skip step 3 (to reach step 4)

	ran        bool // step 3 ran (completeExtras failed)
	paths      int  // augmenting paths taken
	sticky     int  // of which gave up a sticky extra
	lost       int  // sticky extras lost in all (given up less taken): 0 means fewest moves
	bestEffort bool // step 4 left the cluster-wide level best effort
}

// finishExtras is steps 3 and 4: completeExtras failed.
func (a *allocator) finishExtras(tls []aTaskList, x *extras) {
	a.repair.ran = true
	r := a.newRepairer(x, a.s.short) // what dealExtras could not place
	nElig := int64(0)
	for c := range a.classes {
		nElig += int64(len(a.classes[c].members))
	}
	small := !a.repair.noExact && int64(len(tls))*nElig <= exactFallbackCells
	if !a.repair.noRepair && r.augment() {
		// A repair that had to give up sticky extras may move more than the fewest (see
		// the top of this file); where the exact solver is cheap, it decides instead.
		if a.repair.lost == 0 || !small {
			r.store()
			return
		}
	}
	if small {
		a.exactExtras(tls, x)
		return
	}
	r.bestEffort()
	r.store()
	a.repair.bestEffort = true
	x.reason = fmt.Sprintf("allocator: the extras of %d task lists × %d workers could not be placed within every worker's cluster-wide share; every task list is balanced, the cluster-wide balance is best effort", len(tls), nElig)
}

// repairer holds the extras as records, one per extra placed, indexed both by task list
// and by worker, for the augmenting paths.
type repairer struct {
	a     *allocator
	x     *extras
	short []int32 // per task list: extras not placed yet

	// Task list t's records are tOff[t] … tOff[t]+tN[t]-1 (room for Rt). A record's task
	// list never changes; its worker does, when a path moves it.
	tOff, tN       []int32
	recT, recW     []int32
	recPos         []int32 // the record's position in its worker's list
	recSticky      []bool  // on a sticky cell of its worker
	wOff, wN, wRec []int32 // worker i's records: wRec[wOff[i] : wOff[i]+wN[i]] (room for hi_k)

	// The BFS. Node v: task list v < T, worker T+i, X = T+N. Marks are valid when they
	// equal gen, so nothing is cleared between searches.
	gen          uint32
	wSeen        []uint32
	wFrom        []int32 // the task list the worker takes; -1: reached through X
	xSeen        bool
	xFrom        int32 // the worker that took hi_k, reaching X
	tSeen, tDone []uint32
	tDist        []int32 // sticky extras given up to reach it
	tFrom        []int32 // the record given up to reach it; -1: a task list with extras unplaced
	hMark        []uint32
	hSeq         uint32 // hMark[i] == hSeq: i holds an extra of the task list expanded
	cur, next    []int32

	// skip: per class, positions base[c] … base[c]+len(members) (the last one a sentinel);
	// find(p) is the first member at or after p not reached in this BFS.
	base    []int32
	skip    []int32
	skipGen []uint32

	// cellT[i] == t+1: worker i has sticky cell cellC[i] of task list t (see markCells).
	cellT, cellC []int32
}

// markCells notes the sticky cells of task list t by worker.
func (r *repairer) markCells(t int32) {
	x := r.x
	for c := x.cOff[t]; c < x.cOff[t+1]; c++ {
		w := x.cells[c].w
		r.cellT[w], r.cellC[w] = t+1, c
	}
}

func (a *allocator) newRepairer(x *extras, short []int32) *repairer {
	T, N := len(x.R), len(a.workers)
	r := &repairer{a: a, x: x, short: short}
	r.tOff = make([]int32, T+1)
	for t := range x.R {
		r.tOff[t+1] = r.tOff[t] + x.R[t]
	}
	nRec := r.tOff[T]
	r.tN = make([]int32, T)
	r.recT, r.recW, r.recPos = make([]int32, nRec), make([]int32, nRec), make([]int32, nRec)
	r.recSticky = make([]bool, nRec)
	r.wOff, r.wN = make([]int32, N+1), make([]int32, N)
	for i := range a.workers {
		room := int32(0)
		if a.workers[i].class >= 0 {
			room = max(int32(a.hi(int32(i))), a.workers[i].rel)
		}
		r.wOff[i+1] = r.wOff[i] + room
	}
	r.wRec = make([]int32, r.wOff[N])
	r.cellT, r.cellC = make([]int32, N), make([]int32, N)
	for t := range x.R {
		r.markCells(int32(t))
		for _, c := range x.cells[x.cOff[t]:x.cOff[t+1]] {
			if c.on {
				r.attach(r.newRecord(int32(t), true), c.w, false)
			}
		}
		for _, i := range x.xW[x.xOff[t]:x.xOff[t+1]] {
			r.attach(r.newRecord(int32(t), r.cellT[i] == int32(t+1)), i, false)
		}
	}

	r.wSeen, r.wFrom = make([]uint32, N), make([]int32, N)
	r.tSeen, r.tDone = make([]uint32, T), make([]uint32, T)
	r.tDist, r.tFrom = make([]int32, T), make([]int32, T)
	r.hMark = make([]uint32, N)
	r.base = make([]int32, len(a.classes)+1)
	for c := range a.classes {
		r.base[c+1] = r.base[c] + int32(len(a.classes[c].members)) + 1
	}
	r.skip, r.skipGen = make([]int32, r.base[len(a.classes)]), make([]uint32, r.base[len(a.classes)])
	return r
}

func (r *repairer) newRecord(t int32, sticky bool) int32 {
	e := r.tOff[t] + r.tN[t]
	r.tN[t]++
	r.recT[e], r.recSticky[e] = t, sticky
	return e
}

// attach gives record e to worker i; count says whether i's rel (and X's use) changes
// (not while the records are built from what rel already counts).
func (r *repairer) attach(e, i int32, count bool) {
	r.recW[e], r.recPos[e] = i, r.wN[i]
	r.wRec[r.wOff[i]+r.wN[i]] = e
	r.wN[i]++
	if count {
		a := r.a
		if int64(a.workers[i].rel) >= a.lo(i) {
			r.x.xUsed++
		}
		a.workers[i].rel++
		a.markDirty(i)
	}
}

// detach takes record e from its worker.
func (r *repairer) detach(e int32) {
	i, p := r.recW[e], r.recPos[e]
	last := r.wRec[r.wOff[i]+r.wN[i]-1]
	r.wRec[r.wOff[i]+p], r.recPos[last] = last, p
	r.wN[i]--
	a := r.a
	a.workers[i].rel--
	if int64(a.workers[i].rel) >= a.lo(i) {
		r.x.xUsed--
	}
	a.markDirty(i)
}

// augment places every unplaced extra by an augmenting path, and reports whether both
// levels then hold.
func (r *repairer) augment() bool {
	left := int64(0)
	for _, s := range r.short {
		left += int64(s)
	}
	for ; left > 0; left-- {
		if !r.path() {
			return false
		}
	}
	return r.balanced()
}

// balanced: every extra is placed and every eligible worker is within [lo_k, hi_k].
func (r *repairer) balanced() bool {
	for _, s := range r.short {
		if s != 0 {
			return false
		}
	}
	a := r.a
	for c := range a.classes {
		cl := &a.classes[c]
		for _, i := range cl.members {
			if e := int64(a.workers[i].rel); e < cl.lo || e > cl.hi {
				return false
			}
		}
	}
	return r.x.xUsed <= r.x.K
}

// path finds a path that gives up the fewest sticky extras and applies it; false when
// there is none (see the top of this file: not while an extra is unplaced).
func (r *repairer) path() bool {
	r.gen++
	T, N := int32(len(r.x.R)), int32(len(r.a.workers))
	r.xSeen = false
	r.cur, r.next = r.cur[:0], r.next[:0]
	for t, s := range r.short {
		if s > 0 {
			r.seeT(int32(t), 0, -1)
			r.cur = append(r.cur, int32(t))
		}
	}
	// A 0-1 BFS, one level per sticky extra given up: cur holds the nodes at distance d,
	// next those at d + 1. Only giving up a sticky extra costs 1, so a worker is first
	// reached at its distance and is reached once; a task list may be reached again at a
	// smaller distance, and is expanded once, at the smallest.
	for d := int32(0); ; d++ {
		for q := 0; q < len(r.cur); q++ {
			switch v := r.cur[q]; {
			case v < T:
				if r.tDone[v] == r.gen || r.tDist[v] != d {
					continue
				}
				r.tDone[v] = r.gen
				if end := r.expandT(v); end >= 0 {
					r.apply(end)
					return true
				}
			case v < T+N:
				r.expandW(v-T, d)
			default:
				r.expandX()
			}
		}
		if len(r.next) == 0 {
			return false
		}
		r.cur, r.next = r.next, r.cur[:0]
	}
}

func (r *repairer) seeT(t, d, from int32) {
	r.tSeen[t], r.tDist[t], r.tFrom[t] = r.gen, d, from
}

func (r *repairer) seeW(i, from int32) {
	w := &r.a.workers[i]
	r.wSeen[i], r.wFrom[i] = r.gen, from
	p := r.base[w.class] + w.member
	r.skipGen[p], r.skip[p] = r.gen, p+1
}

// find is the first position at or after p whose member is not reached yet (the class's
// sentinel if none), halving the paths it walks.
func (r *repairer) find(p int32) int32 {
	for r.skipGen[p] == r.gen && r.skip[p] != p {
		q := r.skip[p]
		if r.skipGen[q] == r.gen && r.skip[q] != q {
			r.skip[p] = r.skip[q]
		}
		p = q
	}
	return p
}

// roomy: worker i may take one more extra with no one giving anything up.
func (r *repairer) roomy(i int32) bool {
	a := r.a
	e := int64(a.workers[i].rel)
	return e < a.lo(i) || (e < a.hi(i) && r.x.xUsed < r.x.K)
}

// expandT reaches the workers that may take an extra of task list t and do not hold one
// yet; it returns the first with room, or -1.
func (r *repairer) expandT(t int32) int32 {
	a, T := r.a, int32(len(r.x.R))
	a.classQuotas(r.x.P[t])
	r.hSeq++
	for e := r.tOff[t]; e < r.tOff[t]+r.tN[t]; e++ {
		r.hMark[r.recW[e]] = r.hSeq
	}
	for c := range a.classes {
		cl := &a.classes[c]
		if !cl.frac {
			continue
		}
		end := r.base[c] + int32(len(cl.members))
		for p := r.find(r.base[c]); p < end; p = r.find(p + 1) {
			i := cl.members[p-r.base[c]]
			if r.hMark[i] == r.hSeq {
				continue // holds one already
			}
			r.seeW(i, t)
			if r.roomy(i) {
				return i
			}
			r.cur = append(r.cur, T+i)
		}
	}
	return -1
}

// expandW: worker i (it took an extra, or steps down from hi_k) gives one of its extras
// up, reaching that extra's task list; or, at lo_k, it takes hi_k through X.
func (r *repairer) expandW(i, d int32) {
	a := r.a
	if e := int64(a.workers[i].rel); !r.xSeen && e == a.lo(i) && e < a.hi(i) {
		r.xSeen, r.xFrom = true, i
		r.cur = append(r.cur, int32(len(r.x.R)+len(a.workers)))
	}
	for k := r.wOff[i]; k < r.wOff[i]+r.wN[i]; k++ {
		e := r.wRec[k]
		t := r.recT[e]
		nd := d
		if r.recSticky[e] {
			nd++
		}
		if r.tDone[t] == r.gen || (r.tSeen[t] == r.gen && r.tDist[t] <= nd) {
			continue
		}
		r.seeT(t, nd, e)
		if nd == d {
			r.cur = append(r.cur, t)
		} else {
			r.next = append(r.next, t)
		}
	}
}

// expandX reaches the workers above lo_k: one of them steps down, making room in X.
func (r *repairer) expandX() {
	a, T := r.a, int32(len(r.x.R))
	for c := range a.classes {
		cl := &a.classes[c]
		for _, i := range cl.members {
			if r.wSeen[i] != r.gen && int64(a.workers[i].rel) > cl.lo {
				r.seeW(i, -1)
				r.cur = append(r.cur, T+i)
			}
		}
	}
}

// apply moves the extras along the path that ends at worker end, walking it backwards:
// each worker takes the task list it was reached from, whose record the worker before
// gives up (or which is one of the task list's unplaced extras, where the path starts).
func (r *repairer) apply(end int32) {
	lost, gave := 0, false
	for w := end; ; {
		t := r.wFrom[w]
		sticky := r.stickyCell(t, w)
		if sticky {
			lost--
		}
		e := r.tFrom[t]
		if e < 0 {
			r.attach(r.newRecord(t, sticky), w, true)
			r.short[t]--
			break
		}
		g := r.recW[e]
		if r.recSticky[e] {
			lost++
			gave = true
		}
		r.detach(e)
		r.recSticky[e] = sticky
		r.attach(e, w, true)
		w = g
		if r.wFrom[g] < 0 { // g stepped down from hi_k: the worker that reached X takes it
			w = r.xFrom
		}
	}
	r.a.repair.paths++
	if gave {
		r.a.repair.sticky++
	}
	r.a.repair.lost += lost
}

// stickyCell: worker i holds more than its floor of task list t.
func (r *repairer) stickyCell(t, i int32) bool {
	x := r.x
	for _, c := range x.cells[x.cOff[t]:x.cOff[t+1]] {
		if c.w == i {
			return true
		}
	}
	return false
}

// bestEffort is step 4 for a large table: each task list's unplaced extras go to
// workers that may take one of it (so each task list stays balanced), fewest extras over
// lo_k first; the cluster-wide level may break.
func (r *repairer) bestEffort() {
	a := r.a
	for t := range r.short {
		if r.short[t] == 0 {
			continue
		}
		a.classQuotas(r.x.P[t])
		for ; r.short[t] > 0; r.short[t]-- {
			r.hSeq++
			for e := r.tOff[t]; e < r.tOff[t]+r.tN[t]; e++ {
				r.hMark[r.recW[e]] = r.hSeq
			}
			best := int32(-1)
			for c := range a.classes {
				cl := &a.classes[c]
				if !cl.frac {
					continue
				}
				for _, i := range cl.members {
					if r.hMark[i] != r.hSeq && (best < 0 || a.needier(i, best)) {
						best = i
					}
				}
			}
			// Not through attach: the worker may go past hi_k, beyond its room in wRec.
			e := r.newRecord(int32(t), r.stickyCell(int32(t), best))
			r.recW[e] = best
			a.workers[best].rel++
			a.markDirty(best)
		}
	}
}

// store writes the records back as step 2 leaves its result: the sticky cells on, the
// other extras in xW.
func (r *repairer) store() {
	x := r.x
	x.xW = x.xW[:0]
	for t := range x.R {
		cs := x.cells[x.cOff[t]:x.cOff[t+1]]
		for c := range cs {
			cs[c].on = false
		}
		r.markCells(int32(t))
		sT := int32(0)
		for e := r.tOff[t]; e < r.tOff[t]+r.tN[t]; e++ {
			if i := r.recW[e]; r.cellT[i] == int32(t+1) {
				x.cells[r.cellC[i]].on = true
				sT++
			} else {
				x.xW = append(x.xW, i)
			}
		}
		x.sT[t] = sT
		x.xOff[t+1] = int32(len(x.xW))
	}
}

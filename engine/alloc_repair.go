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
// Fewest moves. Cost = −(extras on sticky cells): in the residual graph, a worker taking
// an extra on a sticky cell costs −1, giving one up +1, every other arc 0. Steps 1 and 2
// end with as many sticky extras as any assignment within the workers' bounds can have
// (step 1's maximum S*), so the partial assignment costs −S*, the least of any flow of
// any value: it is min-cost for its value. Each extra is then placed along a cheapest
// augmenting path, which keeps that true (successive shortest paths), so the finished
// plan is a min-cost flow: it moves the fewest partitions. (A sticky extra given up can
// be won back by a sticky cell taken further on: such a path may cost 0.)
//
// The search (path). Min-cost for its value means no negative cycle in the residual
// graph, counting the arcs back from the sink (a worker's extras, X's use) and to the
// source (a placed extra). That bounds every cost the search can meet:
//   - a task list costs ≥ 0 to reach: one reached by a give-up holds an extra, so it has
//     an arc back to the source at 0, and a cheaper path to it would close a negative
//     cycle; one with extras unplaced is a source at 0;
//   - a worker costs ≥ −1 (a task list, then a sticky take) and X as much as a worker;
//   - from a worker or X, the sink costs ≥ 0 more (the sink reaches a worker holding
//     anything, and X in use, at 0); from a task list ≥ −1 more (the sink reaches it at
//     ≤ +1 through one of its holders);
//   - the cheapest path costs ≥ 0 (the min cost of a flow of value v is convex in v and
//     least at the start).
//
// The search is label-correcting over a bucket queue by cost (−1, 0, 1, …), always
// expanding the lowest bucket: Dial's order, except that a sticky take files a worker
// one bucket below the task list expanding it, so a lower bucket may reopen. A node is
// expanded again only when its label falls. It stops at the first path of cost 0, and
// otherwise once the lowest bucket is above the best path found (a task list there
// gets no path below best, by the bounds above); nodes that cannot beat the best are not
// filed. On a cheapest path of cost c every task list costs ≤ c + 1 to reach and every
// worker ≤ c, and those labels are all right before any bucket above c + 1 opens: so no
// node is expanded at a cost above c + 1, each at most c + 3 times. The path applied is
// the chain of predecessors from the worker with room (a tree: no negative cycle);
// walk checks that it is a path whose cost is the label, and a label under its bound,
// a path under 0 or one whose cost is not its label is counted (repairInfo.inexact:
// tests assert it never happens); the path is applied all the same, as any augmenting
// path keeps both levels.
//
// Cost. A task list's candidate workers are enumerated class by class (only classes
// whose share of it is not whole): its sticky cells first (at its cost − 1), then the
// members through a skip structure per cost L, "next member not yet labelled ≤ L" (path
// compression; a member is dropped from level L once labelled ≤ L, and labels only fall,
// so each level drops each member once per search). So a search costs
// O((c + 3) · (T·C + N + ΣRt + sticky cells)) for a path of cost c (C classes, the
// union-find's log aside), and all the paths O((3·paths + lost) · …) with lost the sticky
// extras lost in all, usually far less: it stops at the first path of cost 0. Paths are
// needed only for the extras the greedy left over, which are few. Never O(T·N) per path.
// The skip levels take 8 bytes a member each, for the c + 2 levels used.
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
	lost       int  // sticky extras lost in all (given up less taken): the paths' costs
	inexact    int  // searches that found the partial assignment not min-cost (never expected)
	maxCost    int  // the costliest path taken
	reopened   int  // nodes filed again at a lower cost than the bucket being expanded
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
	if !a.repair.noRepair && r.augment() {
		r.store()
		return
	}
	if !a.repair.noExact && int64(len(tls))*nElig <= exactFallbackCells {
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

	// The search (see path). Node v: task list v < T, worker T+i, X = T+N. A label is
	// valid when its mark equals gen, so nothing is cleared between searches.
	gen     uint32
	wSeen   []uint32
	wLab    []int32 // the cheapest cost found so far to reach the worker
	wFrom   []int32 // the task list the worker takes; -1: reached through X
	tSeen   []uint32
	tLab    []int32
	tFrom   []int32 // the record given up to reach it; -1: a task list with extras unplaced
	xSeen   bool
	xLab    int32
	xFrom   int32 // the worker that took hi_k, reaching X
	best    int32 // the cheapest path to a worker with room found so far
	bestEnd int32 // its last worker, -1 when none yet
	broken  bool  // a label fell below its bound: the partial assignment was not min-cost
	hMark   []uint32
	hSeq    uint32 // hMark[i] == hSeq: i holds an extra of the task list expanded
	buckets [][]int32
	heads   []int // buckets[b][heads[b]:] are still to be looked at (cost b-1)
	low     int   // no bucket below low holds anything left

	// Candidate workers by class: positions base[c] … base[c]+len(members) (the last a
	// sentinel, posW -1). levels[L] is a skip structure over them for the task lists
	// expanded at cost L: from a position, the first member not yet labelled L or less.
	base   []int32
	posW   []int32
	levels []skipLevel

	// cellT[i] == t+1: worker i has sticky cell cellC[i] of task list t (see markCells).
	cellT, cellC []int32
}

// skipLevel is a "next member not yet labelled ≤ L" structure: nxt[p] == p means that
// position p has not been found labelled (≤ L) yet; otherwise nxt[p] is a position
// further on with nothing in between but labelled members. Valid where gen equals the
// repairer's, so it restarts with every search.
type skipLevel struct {
	nxt []int32
	gen []uint32
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

	r.wSeen, r.wLab, r.wFrom = make([]uint32, N), make([]int32, N), make([]int32, N)
	r.tSeen, r.tLab, r.tFrom = make([]uint32, T), make([]int32, T), make([]int32, T)
	r.hMark = make([]uint32, N)
	r.base = make([]int32, len(a.classes)+1)
	for c := range a.classes {
		r.base[c+1] = r.base[c] + int32(len(a.classes[c].members)) + 1
	}
	r.posW = make([]int32, r.base[len(a.classes)])
	for c := range a.classes {
		p := r.base[c]
		for _, i := range a.classes[c].members {
			r.posW[p] = i
			p++
		}
		r.posW[p] = -1
	}
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
		r.a.addExtra(r.x, i)
		r.a.markDirty(i)
	}
}

// detach takes record e from its worker.
func (r *repairer) detach(e int32) {
	i, p := r.recW[e], r.recPos[e]
	last := r.wRec[r.wOff[i]+r.wN[i]-1]
	r.wRec[r.wOff[i]+p], r.recPos[last] = last, p
	r.wN[i]--
	r.a.dropExtra(r.x, i)
	r.a.markDirty(i)
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

// path places one extra along a cheapest augmenting path and reports whether there was
// one (see the top of this file: always, while an extra is unplaced). Costs: a sticky
// extra taken −1, one given up +1, all else 0; the search and its bounds are at the top
// of this file.
func (r *repairer) path() bool {
	r.gen++
	T, N := int32(len(r.x.R)), int32(len(r.a.workers))
	r.xSeen, r.broken = false, false
	r.best, r.bestEnd = 1<<30, -1
	for b := range r.buckets {
		r.buckets[b], r.heads[b] = r.buckets[b][:0], 0
	}
	r.low = 0
	for t, s := range r.short {
		if s > 0 {
			r.reachT(int32(t), 0, -1)
		}
	}
	for r.best > 0 {
		for r.low < len(r.buckets) && r.heads[r.low] == len(r.buckets[r.low]) {
			r.low++
		}
		if r.low == len(r.buckets) {
			break
		}
		d := int32(r.low) - 1
		if d > r.best {
			break // a task list at d gets no path below d-1 ≥ best; workers, X none below d
		}
		v := r.buckets[r.low][r.heads[r.low]]
		r.heads[r.low]++
		switch {
		case v < T:
			if r.tLab[v] == d {
				r.expandT(v, d)
			}
		case v < T+N:
			if i := v - T; r.wLab[i] == d && d < r.best {
				r.expandW(i, d)
			}
		default:
			if r.xLab == d && d < r.best {
				r.expandX(d)
			}
		}
	}
	if r.bestEnd < 0 {
		return false
	}
	cost, ok := r.walk(r.bestEnd)
	if !ok {
		return false
	}
	if r.broken || cost != r.best || cost < 0 {
		r.a.repair.inexact++
	}
	r.apply(r.bestEnd, cost)
	return true
}

// push files node v under cost d (the lowest bucket is cost -1).
func (r *repairer) push(v, d int32) {
	b := int(d) + 1
	if b < r.low {
		r.a.repair.reopened++
	}
	for len(r.buckets) <= b {
		r.buckets = append(r.buckets, nil)
		r.heads = append(r.heads, 0)
	}
	r.buckets[b] = append(r.buckets[b], v)
	r.low = min(r.low, b)
}

// reachT: task list t at cost d, by giving up record e (-1: t has extras unplaced).
func (r *repairer) reachT(t, d, e int32) {
	if d < 0 {
		r.broken = true
		return
	}
	if r.tSeen[t] == r.gen && r.tLab[t] <= d {
		return
	}
	r.tSeen[t], r.tLab[t], r.tFrom[t] = r.gen, d, e
	if d <= r.best {
		r.push(t, d)
	}
}

// reachW: worker i at cost d, taking an extra of task list t (-1: stepping down through X).
func (r *repairer) reachW(i, d, t int32) {
	if d < -1 {
		r.broken = true
		return
	}
	if r.wSeen[i] == r.gen && r.wLab[i] <= d {
		return
	}
	r.wSeen[i], r.wLab[i], r.wFrom[i] = r.gen, d, t
	if t >= 0 && r.a.hasRoom(r.x, i) {
		if d < r.best {
			r.best, r.bestEnd = d, i
		}
		return
	}
	if d < r.best {
		r.push(int32(len(r.x.R))+i, d)
	}
}

// reachX: X at cost d, from worker i at lo_k taking hi_k.
func (r *repairer) reachX(d, i int32) {
	if r.xSeen && r.xLab <= d {
		return
	}
	r.xSeen, r.xLab, r.xFrom = true, d, i
	if d < r.best {
		r.push(int32(len(r.x.R)+len(r.a.workers)), d)
	}
}

// labelled: worker i has been reached at cost L or less in this search.
func (r *repairer) labelled(i, L int32) bool {
	return r.wSeen[i] == r.gen && r.wLab[i] <= L
}

// next is the first position at or after p whose member is not labelled L or less (the
// class's sentinel if none), compressing the path it walks.
func (r *repairer) next(L, p int32) int32 {
	for int(L) >= len(r.levels) {
		n := len(r.posW)
		r.levels = append(r.levels, skipLevel{nxt: make([]int32, n), gen: make([]uint32, n)})
	}
	lv := &r.levels[L]
	root := p
	for {
		if lv.gen[root] != r.gen {
			lv.gen[root], lv.nxt[root] = r.gen, root
		}
		if lv.nxt[root] == root {
			i := r.posW[root]
			if i < 0 || !r.labelled(i, L) {
				break
			}
			lv.nxt[root] = root + 1 // labels only fall: it stays labelled
		}
		root = lv.nxt[root]
	}
	for p != root {
		q := lv.nxt[p]
		lv.nxt[p] = root
		p = q
	}
	return root
}

// expandT: task list t, reached at cost d, gives an extra to a worker that may take one
// of it and holds none: at d-1 on one of its sticky cells, else at d.
func (r *repairer) expandT(t, d int32) {
	a, x := r.a, r.x
	a.classQuotas(x.P[t])
	r.hSeq++
	for e := r.tOff[t]; e < r.tOff[t]+r.tN[t]; e++ {
		r.hMark[r.recW[e]] = r.hSeq
	}
	for _, c := range x.cells[x.cOff[t]:x.cOff[t+1]] {
		if r.hMark[c.w] != r.hSeq {
			r.reachW(c.w, d-1, t)
		}
	}
	for c := range a.classes {
		cl := &a.classes[c]
		if !cl.frac {
			continue
		}
		end := r.base[c] + int32(len(cl.members))
		for p := r.next(d, r.base[c]); p < end; p = r.next(d, p+1) {
			if i := r.posW[p]; r.hMark[i] != r.hSeq {
				r.reachW(i, d, t)
			}
		}
	}
}

// expandW: worker i (it took an extra, or steps down from hi_k), reached at cost d,
// gives one of its extras up, reaching that extra's task list (at d+1 for a sticky
// extra); or, at lo_k, it takes hi_k through X.
func (r *repairer) expandW(i, d int32) {
	a := r.a
	if e := int64(a.workers[i].rel); r.wFrom[i] >= 0 && e == a.lo(i) && e < a.hi(i) {
		r.reachX(d, i)
	}
	for k := r.wOff[i]; k < r.wOff[i]+r.wN[i]; k++ {
		e := r.wRec[k]
		nd := d
		if r.recSticky[e] {
			nd++
		}
		r.reachT(r.recT[e], nd, e)
	}
}

// expandX reaches the workers above lo_k: one of them steps down, making room in X.
func (r *repairer) expandX(d int32) {
	a := r.a
	for c := range a.classes {
		cl := &a.classes[c]
		for _, i := range cl.members {
			if int64(a.workers[i].rel) > cl.lo {
				r.reachW(i, d, -1)
			}
		}
	}
}

// walk follows the path that ends at worker end back to its start, as apply does, and
// returns its cost; false if it is not a path (never, but apply must not loop).
func (r *repairer) walk(end int32) (int32, bool) {
	cost := int32(0)
	steps := len(r.x.R) + len(r.a.workers) + 2
	for w := end; steps > 0; steps-- {
		t := r.wFrom[w]
		if t < 0 || r.tSeen[t] != r.gen {
			return 0, false
		}
		if r.stickyCell(t, w) {
			cost--
		}
		e := r.tFrom[t]
		if e < 0 {
			return cost, true
		}
		g := r.recW[e]
		if r.recSticky[e] {
			cost++
		}
		w = g
		if r.wFrom[g] < 0 {
			if !r.xSeen {
				return 0, false
			}
			w = r.xFrom
		}
	}
	return 0, false
}

// apply moves the extras along the path that ends at worker end, of cost cost (walk),
// walking it backwards: each worker takes the task list it was reached from, whose
// record the worker before gives up (or which is one of the task list's unplaced
// extras, where the path starts).
func (r *repairer) apply(end, cost int32) {
	gave := false
	for w := end; ; {
		t := r.wFrom[w]
		sticky := r.stickyCell(t, w)
		e := r.tFrom[t]
		if e < 0 {
			r.attach(r.newRecord(t, sticky), w, true)
			r.short[t]--
			break
		}
		g := r.recW[e]
		gave = gave || r.recSticky[e]
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
	r.a.repair.lost += int(cost)
	r.a.repair.maxCost = max(r.a.repair.maxCost, int(cost))
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

package engine

import (
	"math/bits"
	"slices"
)

// The extras problem: which workers get the ceiling (floor + 1) of each task list.
//
// Per task list t and eligible worker i the quota is lo(t,i) = ⌊Pt·wi/W⌋, plus one
// "extra" where Pt·wi/W is not whole; t has Rt extras to give. Cluster-wide, worker i
// must end with ⌊P·wi/W⌋ or ⌈P·wi/W⌉ partitions in all. The floors of a worker add up to
// Fk, the same for every worker of capacity class k, so the cluster-wide rule says how
// many extras each worker gets: between lo_k = ⌊P·wk/W⌋ − Fk and hi_k = ⌈P·wk/W⌉ − Fk,
// where hi_k ≤ lo_k + 1. Exactly K = ΣRt − Σ lo_k of the workers take the upper value.
//
// An extra of t given to a worker that holds more than its floor of t (a "sticky" cell)
// lets it keep one more partition: one move fewer. Moves are fewest when the number of
// extras on sticky cells is the largest any assignment allows: a bipartite b-matching of
// task lists to workers with weights 0/1, which the allocator solves in three steps:
//
//  1. Sticky cells, as a max-flow: task list t supplies at most Rt; worker i absorbs up
//     to lo_k directly, and one more through a shared node X of capacity K (the workers
//     allowed to take hi_k). A greedy pass fills it, a count of the sticky cells bounds it
//     from above, and only when the greedy falls short of that bound do augmenting paths
//     (BFS over the sparse sticky cells) finish the flow. The flow's value bounds the
//     extras on sticky cells of any assignment from above.
//  2. The other extras of each task list go to eligible workers it has not given one,
//     largest cluster-wide need first (lo_k − extras so far), then by id: the "fewest so
//     far" order of the class buckets. A worker above lo_k is used only while fewer than
//     K are. This is the greedy that realises degree sequences on a complete bipartite
//     graph (Ryser), and all workers of a class are alike, so it nearly always succeeds.
//  3. If it does not (task lists whose extras only some classes can take, with small
//     numbers), step 2 is dealt to the end, counting the extras that found no worker,
//     and each of those is placed by an augmenting path over the implicit task list ×
//     worker graph: the worker that takes it gives up another extra, which another
//     worker takes, … until one with room (alloc_repair.go). A plan meeting both levels
//     always exists, so a path always does. Each path is a cheapest one (a sticky extra
//     taken −1, one given up +1: successive shortest paths), found in
//     O((c + 3) · (T + N + extras)) for a path of cost c, nearly always 0 or 1.
//  4. Only if that fails (a bug), a last resort: an exact min-cost flow over the explicit
//     table (exactExtras) when it is small, else every task list balanced with the
//     cluster-wide level best effort, said in Plan.Reason. Small inputs (≤ exactCells
//     cells) skip steps 1–3 and are solved exactly from the start, for the canonical
//     tie-break that keeps their targets from drifting (see exactExtras).
//
// Steps 1 and 2 keep as many sticky cells as step 1's upper bound, and step 3 loses the
// fewest any plan meeting both levels must: no assignment meeting both levels moves
// fewer partitions.
//
// Where ties leave freedom, the next plan must name the same target as the last while a
// rebalance is under way (no drift: no partition moves that the first plan did not move,
// and the rounds stay the fewest the throttle allows). The exact solver is canonical: its
// ties go by one fixed order (exactExtras). Steps 1 and 2 are not (nor is step 3, which
// starts from their result): they prefer sticky cells reached through a Releasing row (a
// handoff in flight) and give a free extra first to the worker an acknowledged release
// named as its target (the hint), which is enough for the usual shapes, but on irregular
// inputs, after some handoffs, they can settle on another split of the extras that is
// just as good. What keeps the target there is the caller's previous plan
// (PlanInput.Previous, alloc_previous.go): after step 1, when its extras are still a
// solution with as many sticky extras as step 1's maximum, they are taken as they are and
// step 2 is skipped. While a target is being reached that is always so, as a completed
// handoff only makes sticky a cell the target gives an extra and only stops one being
// sticky that it does not.

// xCell is a sticky cell: a task list and a worker holding more than its floor of it.
type xCell struct {
	t, w int32
	on   bool // the worker gets an extra of the task list
	rel  bool // some of what it holds arrives through a Releasing row
}

type extras struct {
	R     []int32 // per task list: extras to give
	P     []int   // per task list: partitions
	sT    []int32 // per task list: extras given to sticky cells
	cOff  []int32 // cells[cOff[t]:cOff[t+1]] are task list t's sticky cells
	cells []xCell
	hOff  []int32 // hints[hOff[t]:hOff[t+1]]: workers an acknowledged release of t names
	hints []int32
	K     int64 // workers that may take hi_k
	sumR  int64 // extras in all
	xUsed int64 // workers above lo_k so far

	// The result: the workers with an extra of task list t are those of its cells that
	// are on, and xW[xOff[t]:xOff[t+1]] (the others).
	xOff []int32
	xW   []int32

	exact  bool   // exactExtras ran (for tests)
	reason string // step 4 left the cluster-wide level best effort: Plan.Reason

	// The plan's bookkeeping, gathered in the same pass: per task list the kinds of its
	// rows (or-ed), and the rows Releasing from a live owner.
	flags    []uint8
	inflight int
}

// classQuotas sets every class's floor and frac for task list of P partitions.
func (a *allocator) classQuotas(P int) {
	for c := range a.classes {
		cl := &a.classes[c]
		cl.floor = int64(P) * cl.cap / a.capSum
		cl.frac = int64(P)*cl.cap%a.capSum != 0
	}
}

func (a *allocator) lo(i int32) int64 { return a.classes[a.workers[i].class].lo }
func (a *allocator) hi(i int32) int64 { return a.classes[a.workers[i].class].hi }

// solveExtras decides the extras of every task list (see the top of this file). On
// return every eligible worker's rel is its number of extras and its class's offset the
// sum of its floors, so that total() is its cluster-wide count.
func (a *allocator) solveExtras(tls []aTaskList, slots []aSlot) *extras {
	T := len(tls)
	b := a.s
	x := &extras{R: grow(&b.R, T), P: grow(&b.P, T), sT: grow(&b.sT, T), cOff: grow(&b.cOff, T+1), hOff: grow(&b.hOff, T+1), hints: b.hints[:0]}

	// Quotas. Floors add up per class; P is the total number of partitions.
	var P, sumR int64
	for c := range a.classes {
		a.classes[c].offset = 0
	}
	for t := range tls {
		Pt := tls[t].tl.Partitions
		P += int64(Pt)
		r := int64(Pt)
		for c := range a.classes {
			cl := &a.classes[c]
			f := int64(Pt) * cl.cap / a.capSum
			cl.offset += f
			r -= f * int64(len(cl.members))
		}
		x.R[t] = int32(r)
		x.P[t] = Pt
		sumR += r
	}
	x.K, x.sumR = sumR, sumR
	for c := range a.classes {
		cl := &a.classes[c]
		share := P * cl.cap
		cl.lo = share/a.capSum - cl.offset
		cl.hi = (share+a.capSum-1)/a.capSum - cl.offset
		x.K -= cl.lo * int64(len(cl.members))
	}

	// Sticky cells and hints, per task list.
	x.cells = grow(&a.s.cells, min(a.holds, len(slots)))[:0]
	// This pass also does the plan's per task list bookkeeping: the flags of the kinds
	// of its rows, and the releases in flight.
	x.flags = grow(&b.flags, T)
	for t := range tls {
		if a.holds == 0 && a.inflightRows == 0 {
			break // nothing held, no hints, nothing in flight: from scratch
		}
		tl := &tls[t]
		ss := slots[tl.off : tl.off+tl.tl.Partitions]
		a.newStamp()
		var hinted []int32
		var flags uint8
		for _, sl := range ss {
			kd := sl.kind()
			flags |= kd
			if kd&kindMask == kindInFlight {
				a.workers[sl.owner-1].inflight++
				x.inflight++
			}
			h := sl.hold()
			if h < 0 {
				continue
			}
			a.touch(h)
			w := &a.workers[h]
			switch k := kd; {
			case k&kindHint != 0:
				w.kept++ // here: the hints naming it
				if !w.listed {
					w.listed = true // here: "already in hinted"
					hinted = append(hinted, h)
				}
			default:
				w.cur++
				if k&kindViaRelease != 0 {
					w.extra = true // here: "holds through a Releasing row"
				}
			}
		}
		if len(a.touched) > 0 {
			a.classQuotas(tl.tl.Partitions)
		}
		for _, i := range a.touched {
			w := &a.workers[i]
			cl := &a.classes[w.class]
			if cl.frac && int64(w.cur) > cl.floor {
				x.cells = append(x.cells, xCell{t: int32(t), w: i, rel: w.extra})
				w.cnt++
			}
		}
		// A hint matters for the extra only if it is what takes the worker over its floor.
		for _, i := range hinted {
			w := &a.workers[i]
			if cl := &a.classes[w.class]; cl.frac && int64(w.cur) <= cl.floor && int64(w.cur+w.kept) > cl.floor {
				x.hints = append(x.hints, i)
			}
		}
		x.cOff[t+1] = int32(len(x.cells))
		x.hOff[t+1] = int32(len(x.hints))
		x.flags[t] = flags
	}

	// Small problems are solved exactly, with ties broken by a fixed order (see
	// exactExtras): that is what keeps a target from drifting while it is reached.
	nElig := 0
	for c := range a.classes {
		nElig += len(a.classes[c].members)
	}
	if int64(T)*int64(nElig) <= exactCells && !a.forceFast {
		a.exactExtras(tls, x)
		return x
	}

	// Step 1: sticky cells. rel counts each worker's extras from here on.
	for i := range a.workers {
		a.workers[i].rel = 0
	}
	bound := a.greedySticky(x)
	chosen := int64(0)
	for t := range x.sT {
		chosen += int64(x.sT[t])
	}
	if chosen < bound {
		a.augmentSticky(x)
	}
	// The previous plan's extras, if they are as good: see alloc_previous.go.
	if a.prev != nil && a.adoptPrevious(tls, x) {
		return x
	}
	for i := range a.workers { // every worker is filed under rel 0 (setupWorkers)
		if w := &a.workers[i]; w.rel != w.brel {
			a.markDirty(int32(i))
		}
	}

	// Step 2: the other extras; steps 3 and 4 when the greedy paints itself into a corner.
	if !a.completeExtras(tls, x) {
		a.finishExtras(tls, x)
	}
	return x
}

func (a *allocator) markDirty(i int32) {
	if w := &a.workers[i]; !w.dirty {
		w.dirty = true
		a.dirty = append(a.dirty, i)
	}
}

// greedySticky fills step 1's flow greedily and returns an upper bound of its value:
// a task list gives at most min(Rt, its sticky cells), a worker takes at most lo_k of
// its sticky cells plus, for at most K workers, one more.
//
// The cells it leaves out matter for step 2: their task lists' extras go to other
// workers, each to a different one, and a worker that joined needs its share from as
// many different task lists. So a worker over its limit gives up cells in the task lists
// with the fewest extras left over so far.
func (a *allocator) greedySticky(x *extras) int64 {
	surplus := func(i int32) int64 { return int64(a.workers[i].cnt) - a.lo(i) }
	// 1. A task list keeps at most Rt cells: those of the workers with the least surplus
	// (they need not give any up), handoffs in flight first.
	free := grow(&a.s.free, len(x.R)) // extras of t not on a sticky cell, so far
	var byT int64
	for t := range x.R {
		cs := x.cells[x.cOff[t]:x.cOff[t+1]]
		for c := range cs {
			cs[c].on = true
			a.workers[cs[c].w].rel++ // rel: the cells a worker keeps after step 1
		}
		if n := int32(len(cs)); n > x.R[t] {
			order := make([]int32, len(cs))
			for c := range order {
				order[c] = int32(c)
			}
			slices.SortStableFunc(order, func(p, q int32) int {
				cp, cq := &cs[p], &cs[q]
				if cp.rel != cq.rel {
					if cp.rel {
						return -1
					}
					return 1
				}
				if sp, sq := surplus(cp.w), surplus(cq.w); sp != sq {
					return cmpInt64(sp, sq)
				}
				return int(a.workers[cp.w].rank) - int(a.workers[cq.w].rank)
			})
			for _, c := range order[x.R[t]:] {
				cs[c].on = false
				a.workers[cs[c].w].rel--
			}
			n = x.R[t]
		}
		x.sT[t] = min(int32(len(cs)), x.R[t])
		free[t] = x.R[t] - x.sT[t]
		byT += int64(x.sT[t])
	}
	// 2. Each worker keeps at most lo_k, or lo_k + 1 for the first K (by rank) that have
	// more; it gives up the rest where they are easiest to take: in the task lists with
	// the most workers that need extras (below lo_k) and could take one of that task
	// list (they have no sticky cell of it), less the extras left over there so far.
	//
	// Usually few workers give anything up (after a join, the few that must come down to
	// the ceiling), so only the cells each worker keeps after step 1 are counted (rel,
	// above); only the workers over their limit have their cells listed and chosen from,
	// and takers is worked out only for the task lists of those cells.
	order := a.rankOrder()
	var direct, over int64
	droppers := false
	for _, i := range order {
		w := &a.workers[i]
		lo, hi := a.lo(i), a.hi(i)
		if w.cnt > 0 {
			direct += min(int64(w.cnt), lo)
			if int64(w.cnt) > lo && hi > lo {
				over++
			}
		}
		limit := lo
		if int64(w.rel) > lo && hi > lo && x.xUsed < x.K {
			limit = lo + 1
			x.xUsed++
		}
		// need: here, how many cells it gives up.
		w.need = int32(max(0, int64(w.rel)-limit))
		droppers = droppers || w.need > 0
	}
	bound := min(byT, direct+min(over, x.K))
	if !droppers {
		return bound
	}
	wOff, wCells := a.byWorker(x, true)
	takers := grow(&a.s.takers, len(x.R))
	needy := make([]int32, len(a.classes))
	for i := range a.workers {
		if w := &a.workers[i]; w.class >= 0 && int64(w.cnt) < a.lo(int32(i)) {
			needy[w.class]++
		}
	}
	done := grow(&a.s.takersDone, len(x.R))
	for _, c := range wCells {
		t := x.cells[c].t
		if done[t] {
			continue
		}
		done[t] = true
		a.classQuotas(x.P[t])
		for c := range a.classes {
			if a.classes[c].frac {
				takers[t] += needy[c]
			}
		}
		for _, cell := range x.cells[x.cOff[t]:x.cOff[t+1]] {
			if w := &a.workers[cell.w]; int64(w.cnt) < a.lo(cell.w) {
				takers[t]--
			}
		}
	}
	var mine []int32
	for _, i := range order {
		w := &a.workers[i]
		if w.need == 0 {
			continue
		}
		mine = mine[:0]
		for _, c := range wCells[wOff[i]:wOff[i+1]] {
			if x.cells[c].on {
				mine = append(mine, c)
			}
		}
		for d := w.need; d > 0; d-- {
			best := -1
			for k, c := range mine {
				if c < 0 {
					continue
				}
				if best < 0 || x.dropBefore(takers, free, c, mine[best]) {
					best = k
				}
			}
			cell := &x.cells[mine[best]]
			cell.on = false
			x.sT[cell.t]--
			free[cell.t]++
			mine[best] = -1
		}
		w.rel -= w.need
		w.need = 0
	}
	return bound
}

// dropBefore: giving up cell c costs less than giving up cell d: its task list has
// more room for another taker (takers − extras left over), then fewer extras left over,
// then it is not a handoff in flight, then it comes first.
func (x *extras) dropBefore(takers, free []int32, c, d int32) bool {
	cc, cd := &x.cells[c], &x.cells[d]
	if sc, sd := takers[cc.t]-free[cc.t], takers[cd.t]-free[cd.t]; sc != sd {
		return sc > sd
	}
	if free[cc.t] != free[cd.t] {
		return free[cc.t] < free[cd.t]
	}
	if cc.rel != cd.rel {
		return !cc.rel
	}
	return c < d
}

func cmpInt64(p, q int64) int {
	switch {
	case p < q:
		return -1
	case p > q:
		return 1
	}
	return 0
}

// rankOrder is the eligible workers in rank order.
func (a *allocator) rankOrder() []int32 {
	var out []int32
	for c := range a.classes {
		out = append(out, a.classes[c].members...)
	}
	if len(a.classes) > 1 {
		slices.SortFunc(out, a.byRank)
	}
	return out
}

// byWorker indexes the cells by worker: wCells[wOff[i]:wOff[i+1]] are worker i's, in
// cell order. With givers, only those of the workers that give cells up (need > 0 in
// greedySticky) are listed.
func (a *allocator) byWorker(x *extras, givers bool) (wOff, wCells []int32) {
	N := len(a.workers)
	wOff = grow(&a.s.wOff, N+1)
	// With givers, a byte per worker says who gives: the pass over the cells then reads
	// 10 KB at 10k workers rather than the workers themselves.
	var gives []bool
	if givers {
		gives = grow(&a.s.gives, N)
		for i := range a.workers {
			gives[i] = a.workers[i].need > 0
		}
	}
	n := 0
	for _, c := range x.cells {
		if !givers || gives[c.w] {
			wOff[c.w+1]++
			n++
		}
	}
	for i := 1; i <= N; i++ {
		wOff[i] += wOff[i-1]
	}
	wCells = grow(&a.s.wCells, n)
	fill := grow(&a.s.fill, N)
	copy(fill, wOff[:N])
	for c := range x.cells {
		if w := x.cells[c].w; !givers || gives[w] {
			wCells[fill[w]] = int32(c)
			fill[w]++
		}
	}
	return wOff, wCells
}

// augmentSticky finishes step 1's max-flow with shortest augmenting paths. Nodes are the
// task lists [0, T), the workers [T, T+N) and X (T+N). A path starts at a task list
// with extras left, enters a worker through an unused sticky cell, and either ends there
// (the worker is below lo_k), goes on through one of the worker's used cells to another
// task list (the worker gives that extra up), or passes through X (the worker takes hi_k:
// X has room, or a worker above lo_k steps down to lo_k by giving up a used cell).
func (a *allocator) augmentSticky(x *extras) {
	T, N := len(x.R), len(a.workers)
	X := T + N
	wOff, wCells := a.byWorker(x, false)
	prev := make([]int32, X+1)     // node the BFS came from, -1 for none
	prevCell := make([]int32, X+1) // the cell of that edge, -1 for X's edges
	seen := make([]bool, X+1)
	queue := make([]int32, 0, X+1)
	for {
		clear(seen)
		queue = queue[:0]
		for t := range x.R {
			if x.sT[t] < x.R[t] && x.cOff[t+1] > x.cOff[t] {
				seen[t], prev[t] = true, -1
				queue = append(queue, int32(t))
			}
		}
		end := int32(-1)
		visit := func(v, from, cell int32) {
			seen[v], prev[v], prevCell[v] = true, from, cell
			queue = append(queue, v)
		}
		for q := 0; q < len(queue) && end < 0; q++ {
			u := queue[q]
			switch {
			case int(u) < T:
				for c := x.cOff[u]; c < x.cOff[u+1]; c++ {
					cell := &x.cells[c]
					v := int32(T) + cell.w
					if cell.on || seen[v] {
						continue
					}
					visit(v, u, c)
					if int64(a.workers[cell.w].rel) < a.lo(cell.w) {
						end = v
						break
					}
				}
			case int(u) < X:
				i := u - int32(T)
				if e := int64(a.workers[i].rel); !seen[X] && e >= a.lo(i) && e < a.hi(i) {
					visit(int32(X), u, -1)
					if x.xUsed < x.K {
						end = int32(X)
						break
					}
				}
				for _, c := range wCells[wOff[i]:wOff[i+1]] {
					if t := x.cells[c].t; x.cells[c].on && !seen[t] {
						visit(t, u, c)
					}
				}
			default: // X
				for i := range a.workers {
					v := int32(T + i)
					if !seen[v] && a.workers[i].class >= 0 && int64(a.workers[i].rel) > a.lo(int32(i)) {
						visit(v, u, -1)
					}
				}
			}
		}
		if end < 0 {
			return
		}
		if end == int32(X) {
			x.xUsed++
		}
		v := end
		for prev[v] >= 0 {
			u := prev[v]
			if c := prevCell[v]; c >= 0 {
				cell := &x.cells[c]
				if int(u) < T { // task list → worker: the worker takes the extra
					cell.on = true
					a.workers[cell.w].rel++
				} else { // worker → task list: the worker gives it up
					cell.on = false
					a.workers[cell.w].rel--
				}
			}
			v = u
		}
		x.sT[v]++
	}
}

// completeExtras is step 2: dealExtras from step 1's result. It reports false when
// some extra found no worker (the counts per task list are then in a.s.short, for the
// repair), or some worker ended below lo_k.
func (a *allocator) completeExtras(tls []aTaskList, x *extras) bool {
	if short := a.dealExtras(tls, x); short > 0 {
		return false
	}
	for i := range a.workers {
		if w := &a.workers[i]; w.class >= 0 && int64(w.rel) < a.lo(int32(i)) {
			return false
		}
	}
	return true
}

// dealExtras deals each task list's extras that step 1 left free: first to the workers
// an acknowledged release named (hints), then to the neediest workers that may take one.
// It goes on past a task list whose extras find no worker, recording per task list how
// many it could not place in a.s.short, and returns their sum.
func (a *allocator) dealExtras(tls []aTaskList, x *extras) int64 {
	x.xOff = grow(&a.s.xOff, len(tls)+1)
	x.xW = grow(&a.s.xW, int(x.sumR-sumInt32(x.sT)))[:0]
	short := grow(&a.s.short, len(tls))
	var total int64
	for t := range tls {
		a.newStamp()
		r := x.R[t] - x.sT[t]
		for c := x.cOff[t]; c < x.cOff[t+1] && r > 0; c++ {
			if cell := &x.cells[c]; cell.on { // the free extras below must skip it
				a.touch(cell.w)
				a.workers[cell.w].extra = true
			}
		}
		if r > 0 {
			a.classQuotas(tls[t].tl.Partitions)
			for _, h := range x.hints[x.hOff[t]:x.hOff[t+1]] {
				if r > 0 && a.canTake(x, h) {
					a.takeFree(x, h)
					r--
				}
			}
		}
		if r > 0 {
			r = a.dealNeediest(x, r)
		}
		short[t] = r
		total += int64(r)
		x.xOff[t+1] = int32(len(x.xW))
	}
	return total
}

// dealNeediest gives up to r extras of the current task list to the neediest workers
// that may take one, in (cluster-wide need, rank) order across the classes, and returns
// how many found none.
func (a *allocator) dealNeediest(x *extras, r int32) int32 {
	a.syncBuckets()
	for c := range a.classes {
		cl := &a.classes[c]
		cl.peek = -1
		if cl.frac {
			cl.startIter()
			cl.peek = a.next(cl)
		}
	}
	for ; r > 0; r-- {
		best := -1
		for c := range a.classes {
			if i := a.classes[c].peek; i >= 0 && a.canTake(x, i) && (best < 0 || a.needier(i, a.classes[best].peek)) {
				best = c
			}
		}
		if best < 0 {
			break
		}
		cl := &a.classes[best]
		a.takeFiled(x, cl)
		cl.peek = a.next(cl)
	}
	a.applyMoves()
	return r
}

// canTake: worker i is not yet given an extra of the current task list, is eligible
// for it, and has room cluster-wide.
func (a *allocator) canTake(x *extras, i int32) bool {
	w := &a.workers[i]
	if w.class < 0 || !a.classes[w.class].frac || (w.stamp == a.stamp && w.extra) {
		return false
	}
	return a.hasRoom(x, i)
}

// hasRoom: eligible worker i may take one more extra cluster-wide: it is below lo_k, or
// below hi_k while fewer than K workers are above lo_k.
func (a *allocator) hasRoom(x *extras, i int32) bool {
	e := int64(a.workers[i].rel)
	return e < a.lo(i) || (e < a.hi(i) && x.xUsed < x.K)
}

// addExtra counts one more extra for worker i (its rel, and x.xUsed when that takes it
// above lo_k); dropExtra counts one fewer.
func (a *allocator) addExtra(x *extras, i int32) {
	w := &a.workers[i]
	if int64(w.rel) >= a.lo(i) {
		x.xUsed++
	}
	w.rel++
}

func (a *allocator) dropExtra(x *extras, i int32) {
	w := &a.workers[i]
	w.rel--
	if int64(w.rel) >= a.lo(i) {
		x.xUsed--
	}
}

// takeFree gives worker i a free extra of the current task list.
func (a *allocator) takeFree(x *extras, i int32) {
	a.touch(i)
	a.workers[i].extra = true
	a.addExtra(x, i)
	a.markDirty(i)
	x.xW = append(x.xW, i)
}

// takeFiled is takeFree of the member the class's iterator found (peek): it stays filed
// where it is, and the move of its bit to the next bucket is added to the pending moves
// (applied by applyMoves once the task list is dealt, a word at a time: the iterator goes
// through the buckets in member order, so the members it takes share words). Refiling
// each one (syncBuckets) cost more than dealing the extras.
func (a *allocator) takeFiled(x *extras, cl *aClass) {
	i := cl.peek
	a.touch(i)
	w := &a.workers[i]
	w.extra = true
	a.addExtra(x, i)
	w.brel++ // == rel: filed under it once the move is applied
	x.xW = append(x.xW, i)
	bit := uint64(1) << (uint32(w.member) % 64)
	c := w.class
	if n := len(a.moves); n > 0 {
		if m := &a.moves[n-1]; m.class == c && m.rel == int32(cl.peekRel) && m.word == int32(cl.peekWord) {
			m.mask |= bit
			return
		}
	}
	a.moves = append(a.moves, bucketMove{class: c, rel: int32(cl.peekRel), word: int32(cl.peekWord), mask: bit})
}

// applyMoves moves the pending members' bits from their bucket to the next one.
func (a *allocator) applyMoves() {
	for _, m := range a.moves {
		cl := &a.classes[m.class]
		n := int32(bits.OnesCount64(m.mask))
		to := m.rel + 1
		if int(to) >= len(cl.buckets) || cl.buckets[to] == nil {
			// addNew of the first member, then the rest of the word below.
			first := int32(m.word)*64 + int32(bits.TrailingZeros64(m.mask))
			cl.addNew(first, to)
			cl.count[to]--
		}
		cl.buckets[to][m.word] |= m.mask
		cl.count[to] += n
		cl.buckets[m.rel][m.word] &^= m.mask
		if cl.count[m.rel] -= n; cl.count[m.rel] == 0 {
			cl.spare = append(cl.spare, cl.buckets[m.rel])
			cl.buckets[m.rel] = nil
		}
	}
	a.moves = a.moves[:0]
}

// needier orders workers by cluster-wide need (lo_k − extras so far), then rank.
func (a *allocator) needier(i, j int32) bool {
	ni, nj := a.lo(i)-int64(a.workers[i].rel), a.lo(j)-int64(a.workers[j].rel)
	if ni != nj {
		return ni > nj
	}
	return a.workers[i].rank < a.workers[j].rank
}

// exactCells: up to this many task list × worker cells, the extras problem is solved
// exactly (exactExtras) rather than by steps 1 and 2.
const exactCells = 256

// exactExtras is the whole extras problem as a min-cost flow over the explicit
// table: source → task list t (capacity Rt) → worker i (capacity 1 where Pt·wi/W is not
// whole) → sink (lo_k at a cost that outweighs everything else, then hi_k − lo_k more
// free). A sticky cell earns A, more than all tie-breaks together; every cell also earns
// a tie-break, a fixed pseudo-random function of (task list, worker rank).
//
// The tie-break is what makes the answer canonical: the best assignment under one fixed
// order. While a plan's target is being reached, the cells that become sticky are the
// target's own, and those that stop being sticky it did not use, so the target stays
// the best under the same order, and the next plan names it again (no drift), however
// the handoffs interleave.
func (a *allocator) exactExtras(tls []aTaskList, x *extras) {
	x.exact = true
	a.lastExact = true
	T := len(tls)
	var elig []int32
	for i := range a.workers {
		if a.workers[i].class >= 0 {
			elig = append(elig, int32(i))
		}
	}
	node := make([]int32, len(a.workers)) // worker index → node
	for k, i := range elig {
		node[i] = int32(T + 1 + k)
	}
	sink := int32(T + 1 + len(elig))
	g := newFlowGraph(int(sink) + 1)
	nCells := int64(0)
	for t := range tls {
		a.classQuotas(tls[t].tl.Partitions)
		for c := range a.classes {
			if a.classes[c].frac {
				nCells += int64(len(a.classes[c].members))
			}
		}
	}
	// Costs must fit in int64: M ≈ cells² · 2^bits. Up to exactCells that is 20 bits of
	// tie-break; a fallback on a huge table gets fewer (ties then go by path order).
	bits := min(tieBits, max(0, 61-2*bitsLen(nCells+1)))
	A := nCells<<bits + 1
	M := A*(nCells+1) + 1
	mark := make([]int32, len(a.workers)) // t+1 where the worker has a sticky cell of t
	cellArc := make([][]int32, T)         // per task list: the arcs to workers
	for t := range tls {
		g.add(0, int32(t+1), int64(x.R[t]), 0)
		for c := x.cOff[t]; c < x.cOff[t+1]; c++ {
			mark[x.cells[c].w] = int32(t + 1)
		}
		a.classQuotas(tls[t].tl.Partitions)
		for _, i := range elig {
			if !a.classes[a.workers[i].class].frac {
				continue
			}
			cost := -(tieBreak(t, a.workers[i].rank) >> (tieBits - bits))
			if mark[i] == int32(t+1) {
				cost -= A
			}
			cellArc[t] = append(cellArc[t], g.add(int32(t+1), node[i], 1, cost))
		}
	}
	for _, i := range elig {
		lo, hi := a.lo(i), a.hi(i)
		g.add(node[i], sink, lo, -M)
		g.add(node[i], sink, hi-lo, 0)
	}
	g.minCostFlow(0, sink)

	for i := range a.workers {
		a.workers[i].rel = 0
	}
	for c := range x.cells {
		x.cells[c].on = false // every extra is in xW
	}
	x.xOff = grow(&a.s.xOff, T+1)
	x.xW = grow(&a.s.xW, int(x.sumR))[:0]
	for t := range tls {
		for _, e := range cellArc[t] {
			if g.cap[e] == 0 { // saturated: the worker gets the extra
				i := elig[g.to[e]-int32(T+1)]
				x.xW = append(x.xW, i)
				a.workers[i].rel++
			}
		}
		x.xOff[t+1] = int32(len(x.xW))
	}
	for _, i := range elig {
		a.markDirty(i)
	}
}

const tieBits = 20

// tieBreak is cell (t, worker rank)'s tie-break: distinct cells almost never tie, and
// sums of different sets of cells almost never either.
func tieBreak(t int, rank int32) int64 {
	h := uint64(t)*0x9e3779b97f4a7c15 ^ uint64(rank)*0xc2b2ae3d27d4eb4f
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 32
	return int64(h & (1<<tieBits - 1))
}

// flowGraph is a residual graph for min-cost flow: arc e and its reverse e^1.
type flowGraph struct {
	head      []int32
	next, to  []int32
	cap, cost []int64
	pot, dist []int64
	prevArc   []int32 // Dijkstra: the arc into a node; augment: the next arc to try
	onPath    []bool
}

func newFlowGraph(n int) *flowGraph {
	g := &flowGraph{head: make([]int32, n)}
	for i := range g.head {
		g.head[i] = -1
	}
	return g
}

func (g *flowGraph) add(u, v int32, c, cost int64) int32 {
	e := int32(len(g.to))
	g.to = append(g.to, v, u)
	g.cap = append(g.cap, c, 0)
	g.cost = append(g.cost, cost, -cost)
	g.next = append(g.next, g.head[u], g.head[v])
	g.head[u], g.head[v] = e, e+1
	return e
}

// minCostFlow sends as much flow as it can from s to t at the least cost: successive
// shortest paths, Dijkstra over costs made non-negative by potentials (Bellman-Ford
// first, as arcs start with negative costs).
func (g *flowGraph) minCostFlow(s, t int32) {
	n := len(g.head)
	const inf = int64(1) << 62
	g.pot = make([]int64, n)
	g.dist = make([]int64, n)
	g.prevArc = make([]int32, n)
	for i := range g.pot {
		g.pot[i] = inf
	}
	g.pot[s] = 0
	for changed := true; changed; {
		changed = false
		for u := 0; u < n; u++ {
			if g.pot[u] == inf {
				continue
			}
			for e := g.head[u]; e >= 0; e = g.next[e] {
				if v := g.to[e]; g.cap[e] > 0 && g.pot[u]+g.cost[e] < g.pot[v] {
					g.pot[v] = g.pot[u] + g.cost[e]
					changed = true
				}
			}
		}
	}
	for i := range g.pot {
		if g.pot[i] == inf {
			g.pot[i] = 0
		}
	}
	var h distHeap
	for {
		for i := range g.dist {
			g.dist[i], g.prevArc[i] = inf, -1
		}
		g.dist[s] = 0
		h = h[:0]
		h.push(distItem{0, s})
		for len(h) > 0 {
			it := h.pop()
			u := it.v
			if it.d > g.dist[u] {
				continue
			}
			for e := g.head[u]; e >= 0; e = g.next[e] {
				if g.cap[e] == 0 {
					continue
				}
				v := g.to[e]
				if d := g.dist[u] + g.cost[e] + g.pot[u] - g.pot[v]; d < g.dist[v] {
					g.dist[v], g.prevArc[v] = d, e
					h.push(distItem{d, v})
				}
			}
		}
		if g.dist[t] == inf {
			return
		}
		for i := range g.pot {
			if g.dist[i] < inf {
				g.pot[i] += g.dist[i]
			}
		}
		// Every shortest path now uses only arcs of reduced cost 0: send flow along as
		// many of them as there are (depth-first, a node that led nowhere is not tried
		// again in this phase) before the next Dijkstra.
		for i := range g.prevArc {
			g.prevArc[i] = g.head[i] // here: the next arc to try from node i
		}
		g.onPath = slices.Grow(g.onPath[:0], n)[:n]
		for g.augment(s, t, inf) > 0 {
		}
	}
}

// augment sends up to f along one path of reduced cost 0 from u to t and returns how
// much it sent.
func (g *flowGraph) augment(u, t int32, f int64) int64 {
	if u == t {
		return f
	}
	g.onPath[u] = true
	defer func() { g.onPath[u] = false }()
	for ; g.prevArc[u] >= 0; g.prevArc[u] = g.next[g.prevArc[u]] {
		e := g.prevArc[u]
		v := g.to[e]
		if g.cap[e] == 0 || g.onPath[v] || g.cost[e]+g.pot[u]-g.pot[v] != 0 {
			continue
		}
		if d := g.augment(v, t, min(f, g.cap[e])); d > 0 {
			g.cap[e] -= d
			g.cap[e^1] += d
			return d
		}
	}
	return 0
}

type distItem struct {
	d int64
	v int32
}

// distHeap is a binary min-heap by (d, v): ties by node, so that the paths are the same
// on every run.
type distHeap []distItem

func (h distItem) less(o distItem) bool { return h.d < o.d || (h.d == o.d && h.v < o.v) }

func (h *distHeap) push(it distItem) {
	*h = append(*h, it)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].less(s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *distHeap) pop() distItem {
	s := *h
	top := s[0]
	s[0] = s[len(s)-1]
	s = s[:len(s)-1]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < len(s) && s[l].less(s[m]) {
			m = l
		}
		if r := l + 1; r < len(s) && s[r].less(s[m]) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

func sumInt32(s []int32) int64 {
	var n int64
	for _, v := range s {
		n += int64(v)
	}
	return n
}

// bitsLen is the number of bits needed to write n ≥ 0.
func bitsLen(n int64) int {
	b := 0
	for ; n > 0; n >>= 1 {
		b++
	}
	return b
}

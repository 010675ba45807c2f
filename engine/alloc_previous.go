package engine

// The previous plan (PlanInput.Previous): what keeps a target from drifting on the fast
// path.
//
// A coordinator reaches a target round by round under the throttle and plans again after
// every round. The exact solver breaks ties by one fixed order and so names the same
// target every time (see exactExtras). The fast path (greedySticky, augmentSticky,
// completeExtras) finds a target with the fewest moves too, but which of several such
// targets depends on the state: as handoffs complete, it can give the extras of some
// task lists to other workers, and then partitions move that the first plan did not
// move, and the rounds exceed the throttle's bound.
//
// While a target is being reached it stays one of the best for the state reached (a
// completed handoff only makes sticky a cell the target gives an extra, and only stops
// one being sticky that it does not), so the next plan can simply take it again: when
// the previous plan's extras are a solution of this input's extras problem (every task
// list's extras on distinct eligible workers whose share of it is not whole, every
// worker's count of extras within its cluster-wide bounds) with as many extras on sticky
// cells as step 1's maximum flow, they are used as they are (adoptPrevious). Given the
// same quotas, the rest of the plan (each holder keeps its lowest-numbered partitions,
// acknowledged releases go back to their hinted target) reproduces the previous target's
// partitions; what is left to the pool goes first to its previous target
// (poolToPrevious), so that a partition the caller did not assign when told to still goes
// where it was going.
//
// Everything is checked against this input, so a stale or foreign plan can cost nothing
// but the check: it is ignored where it does not apply (a task list or worker it does
// not know), and its extras are used only when they are as good as any. Task lists and
// workers are matched by name, in one merge of sorted lists: O(task lists + workers),
// then O(extras) for the check and O(pool) per task list; nothing per partition.

// usePrevious maps prev's task lists and workers to this plan's (a.s.prevT, a.s.prevW)
// and sets a.prev to prev if anything of it applies, else to nil.
func (a *allocator) usePrevious(prev *Plan, tls []aTaskList) {
	a.prev = nil
	if prev == nil || len(prev.Owner) != len(prev.TaskLists) || len(a.ids) == 0 {
		return
	}
	prevT := grow(&a.s.prevT, len(tls))
	matched := false
	j := 0
	for t := range tls {
		prevT[t] = -1
		tl := &tls[t].tl
		for j < len(prev.TaskLists) && compareTaskLists(prev.TaskLists[j], *tl) < 0 {
			j++
		}
		if j < len(prev.TaskLists) && compareTaskLists(prev.TaskLists[j], *tl) == 0 {
			prevT[t] = int32(j)
			matched = true
		}
	}
	if !matched {
		return
	}
	a.s.prevW = grow(&a.s.prevW, len(prev.Workers))
	if !a.mapWorkers(prev.Workers, a.s.prevW) {
		return
	}
	a.prev = prev
}

// mapWorkers sets prevW[j] to the index of prevIDs[j] among this plan's workers, -1 when
// it is not one, and reports whether any is. A plan's Workers are the live ids sorted,
// then the dead owners sorted: two sorted runs, each merged with the sorted ids. (A list
// that is neither is only partly mapped: what is not found is simply not used.)
func (a *allocator) mapWorkers(prevIDs []string, prevW []int32) bool {
	for j := range prevW {
		prevW[j] = -1
	}
	// Usually the workers have not changed: the live ids come first, the same.
	if len(prevIDs) >= len(a.ids) {
		same := true
		for i, id := range a.ids {
			if !sameString(id, prevIDs[i]) {
				same = false
				break
			}
		}
		if same {
			for i := range a.ids {
				prevW[i] = int32(i)
			}
			return true
		}
	}
	found, runs, i := false, 1, 0
	for j, id := range prevIDs {
		if j > 0 && id < prevIDs[j-1] {
			if runs++; runs > 2 {
				break
			}
			i = 0
		}
		for i < len(a.ids) && a.ids[i] < id {
			i++
		}
		if i < len(a.ids) && a.ids[i] == id {
			prevW[j] = int32(i)
			found = true
		}
	}
	return found
}

// prevWorker is the worker (this plan's index) that previous worker index j maps to, -1
// for none.
func (a *allocator) prevWorker(j int32) int32 {
	if uint32(j) >= uint32(len(a.s.prevW)) {
		return -1
	}
	return a.s.prevW[j]
}

// prevExtras is the previous plan's extras of task list t (previous worker indices);
// false when the previous plan's record of them is not well formed.
func (a *allocator) prevExtras(t int) ([]int32, bool) {
	pt := a.s.prevT[t]
	if pt < 0 {
		return nil, true
	}
	off, ws := a.prev.extraOff, a.prev.extraW
	if len(off) != len(a.prev.TaskLists)+1 {
		return nil, false
	}
	lo, hi := off[pt], off[pt+1]
	if lo < 0 || lo > hi || int(hi) > len(ws) {
		return nil, false
	}
	return ws[lo:hi], true
}

// adoptPrevious makes the previous plan's extras this plan's, after step 1 of the fast
// path, if they solve this input's extras problem with as many extras on sticky cells as
// step 1 found (its maximum flow: no solution has more), and reports whether it did. On
// true, x and every worker's rel hold that solution, as completeExtras would leave them.
func (a *allocator) adoptPrevious(tls []aTaskList, x *extras) bool {
	// First the cheap tests, which reject the previous extras after a join or a leave
	// (a worker gone, or one below its new cluster-wide share): a worker the previous
	// plan did not know that must get extras (a join), then the counts per task list and
	// per worker.
	has := grow(&a.s.prevHas, len(a.workers))
	for _, i := range a.s.prevW {
		if i >= 0 {
			has[i] = true
		}
	}
	for i := range a.workers {
		if !has[i] && a.workers[i].class >= 0 && a.lo(int32(i)) > 0 {
			return false
		}
	}
	cnt := grow(&a.s.prevCnt, len(a.workers)) // extras per worker
	for t := range tls {
		ws, ok := a.prevExtras(t)
		if !ok || len(ws) != int(x.R[t]) {
			return false
		}
		for _, j := range ws {
			i := a.prevWorker(j)
			if !a.eligible(i) {
				return false // gone or draining
			}
			cnt[i]++
		}
	}
	for i := range a.workers {
		if a.workers[i].class < 0 {
			continue
		}
		// Within [lo, hi] for every worker also means that exactly K take hi: the extras
		// add up to ΣRt = Σlo + K.
		if e := int64(cnt[i]); e < a.lo(int32(i)) || e > a.hi(int32(i)) {
			return false
		}
	}
	// Then per task list: distinct workers whose share is not whole, and as many extras
	// on sticky cells as step 1's maximum.
	var sticky, best int64
	for t := range tls {
		best += int64(x.sT[t])
		ws, _ := a.prevExtras(t)
		if len(ws) == 0 {
			continue
		}
		a.newStamp()
		a.classQuotas(x.P[t])
		for _, j := range ws {
			i := a.prevWorker(j)
			if !a.classes[a.workers[i].class].frac {
				return false // its share of t is whole now
			}
			a.touch(i)
			w := &a.workers[i]
			if w.extra {
				return false // listed twice
			}
			w.extra = true
		}
		for _, c := range x.cells[x.cOff[t]:x.cOff[t+1]] {
			if w := &a.workers[c.w]; w.stamp == a.stamp && w.extra {
				sticky++
			}
		}
	}
	if sticky < best {
		return false
	}

	// Adopt: the cells the previous extras fall on are on, the others go to xW.
	x.xOff = grow(&a.s.xOff, len(tls)+1)
	x.xW = grow(&a.s.xW, int(x.sumR))[:0]
	for t := range tls {
		ws, _ := a.prevExtras(t)
		a.newStamp()
		for _, j := range ws {
			i := a.prevWorker(j)
			a.touch(i)
			a.workers[i].extra = true
		}
		x.sT[t] = 0
		cs := x.cells[x.cOff[t]:x.cOff[t+1]]
		for c := range cs {
			w := &a.workers[cs[c].w]
			cs[c].on = w.stamp == a.stamp && w.extra
			if cs[c].on {
				x.sT[t]++
				w.listed = true // here: "its extra is on a sticky cell"
			}
		}
		for _, j := range ws {
			if i := a.prevWorker(j); !a.workers[i].listed {
				x.xW = append(x.xW, i)
			}
		}
		x.xOff[t+1] = int32(len(x.xW))
	}
	x.xUsed = 0
	for i := range a.workers {
		w := &a.workers[i]
		if w.class < 0 {
			continue
		}
		w.rel = cnt[i]
		if int64(w.rel) > a.lo(int32(i)) {
			x.xUsed++
		}
		if w.rel != w.brel {
			a.markDirty(int32(i))
		}
	}
	return true
}

// poolToPrevious gives each partition of task list t still in the pool (tg[k] < 0) to
// its previous target if that worker still needs partitions (listed in the deficit, with
// need), before the rest is dealt in rank order. A pool partition moves whoever gets it,
// so this costs no move; it keeps the previous target where the caller did not carry it
// out (an assignment not written, a handoff whose target has no room any more).
func (a *allocator) poolToPrevious(t int, tg []int32) {
	pt := a.s.prevT[t]
	if pt < 0 {
		return
	}
	po := a.prev.Owner[pt]
	for k := range tg[:min(len(tg), len(po))] {
		if tg[k] >= 0 {
			continue
		}
		i := a.prevWorker(po[k])
		if i < 0 {
			continue
		}
		if w := &a.workers[i]; w.stamp == a.stamp && w.listed && w.need > 0 {
			w.need--
			tg[k] = i
		}
	}
}

// solution is the extras chosen, in Plan's form (Plan.extraOff, Plan.extraW), copied out
// of the scratch memory that the next plan reuses.
func (x *extras) solution() (off, ws []int32) {
	T := len(x.R)
	off = make([]int32, T+1)
	ws = make([]int32, 0, x.sumR) // every extra is on a sticky cell or in xW
	for t := 0; t < T; t++ {
		for _, c := range x.cells[x.cOff[t]:x.cOff[t+1]] {
			if c.on {
				ws = append(ws, c.w)
			}
		}
		ws = append(ws, x.xW[x.xOff[t]:x.xOff[t+1]]...)
		off[t+1] = int32(len(ws))
	}
	return off, ws
}

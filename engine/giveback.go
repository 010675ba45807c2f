package engine

import (
	"fmt"
	"slices"
	"time"
)

// Give-backs, the coordinator's side. A worker gives a partition back when its handler
// keeps failing there (supervise.go); the row comes back Unassigned with GivenBackBy and
// GivenBackAt (store time). The coordinator remembers, per partition, every node that
// gave it back within Config.GiveBackCoolDown, and steers the allocator's placements away
// from them — after planning, without touching the allocator:
//
//   - Assign: the placements of unowned partitions of one task list are interchangeable
//     slots (the allocator balances counts per worker and task list), so a partition
//     placed on a node that is cooling down for it swaps owners with another placement
//     of the same task list. When no swap helps, it goes to the eligible worker (live,
//     not draining, not cooling down for it) that owns the fewest rows; the allocator
//     then evens the counts out by a later move, which the next rule steers.
//   - Release: a move of p from A to a node cooling down for p moves another partition
//     of the same task list from A instead (same counts, same number of moves); if A
//     has none, one from the owner holding the most of the task list (a later move
//     evens that owner and A out); when there is none at all, the move is not made: p
//     stays where it runs, and the balance waits for a cool-down to end rather than
//     bounce p back to where it failed.
//   - When every eligible worker is cooling down for a partition, it is "failing": held
//     unassigned (reported in NodeState.Failing and by a partition_failing event) until
//     the first cool-down ends. So a partition that fails everywhere is retried once per
//     node per cool-down, not bounced around the cluster as fast as it fails.
//
// The memory lives in the coordinator; a new coordinator knows only the last giver of
// each row (GivenBackBy). It is best effort, like every placement preference: safety never
// depends on it.

type coolDowns map[PartitionID]map[string]time.Time

// noteGiveBacks records the give-backs a read returned.
func (n *Node) noteGiveBacks(rows []Assignment) {
	c := &n.c
	for _, a := range rows {
		if a.GivenBackBy == "" || a.GivenBackAt.IsZero() {
			continue
		}
		if c.coolDown == nil {
			c.coolDown = coolDowns{}
		}
		m := c.coolDown[a.Partition]
		if m == nil {
			m = map[string]time.Time{}
			c.coolDown[a.Partition] = m
		}
		if a.GivenBackAt.After(m[a.GivenBackBy]) {
			m[a.GivenBackBy] = a.GivenBackAt
		}
	}
}

// cooling reports whether node gave p back less than GiveBackCoolDown ago (store time).
func (n *Node) cooling(p PartitionID, node string) bool {
	at, ok := n.c.coolDown[p][node]
	return ok && n.c.storeNow.Before(at.Add(n.cfg.GiveBackCoolDown))
}

// trimCoolDowns forgets the cool-downs that have ended.
func (n *Node) trimCoolDowns() {
	c := &n.c
	for _, p := range sortedKeys(c.coolDown) {
		m := c.coolDown[p]
		for _, id := range sortedStrings(m) {
			if !n.cooling(p, id) {
				delete(m, id)
			}
		}
		if len(m) == 0 {
			delete(c.coolDown, p)
		}
	}
}

// steering is what steer changes in a plan: a new owner for some Assign entries ("":
// hold the partition) and another partition for some Release entries (the zero
// PartitionID: do not release), by index.
type steering struct {
	assignTo    map[int]string
	releasePart map[int]PartitionID
}

// steer applies the give-back rules above to a plan. workers are the live workers, rows
// the coordinator's cache (liveOwner says whether a row's owner is live). It returns
// nil when nothing cools down (the steady state costs nothing).
func (n *Node) steer(plan Plan, workers []Worker, liveOwner func(Assignment) bool) *steering {
	c := &n.c
	if len(c.coolDown) == 0 && len(c.failing) == 0 {
		return nil // the steady state: nothing was given back
	}
	n.trimCoolDowns()
	failing := map[PartitionID]bool{}
	defer func() { n.noteFailing(failing) }()
	if len(c.coolDown) == 0 {
		return nil
	}
	st := &steering{assignTo: map[int]string{}, releasePart: map[int]PartitionID{}}
	moves := plan.ExpandMoves(plan.Assign)
	eligible := func(p PartitionID, id string) bool { return id != "" && !n.cooling(p, id) }
	var counts map[string]int // rows per owner, built when first needed
	for i := range moves {
		p, to := moves[i].Partition, moves[i].To
		if eligible(p, to) || len(c.coolDown[p]) == 0 {
			continue
		}
		swapped := false
		for j := range moves {
			q := moves[j].Partition
			if j == i || q.Domain != p.Domain || q.TaskList != p.TaskList {
				continue
			}
			if eligible(p, moves[j].To) && eligible(q, to) {
				moves[i].To, moves[j].To = moves[j].To, to
				st.assignTo[i], st.assignTo[j] = moves[i].To, moves[j].To
				swapped = true
				break
			}
		}
		if swapped {
			continue
		}
		if counts == nil {
			counts = map[string]int{}
			for _, a := range c.rows {
				if liveOwner(a) {
					counts[a.Owner]++
				}
			}
		}
		best := ""
		for _, w := range workers { // sorted by id: ties go to the smallest
			if !w.Draining && eligible(p, w.ID) && (best == "" || counts[w.ID] < counts[best]) {
				best = w.ID
			}
		}
		moves[i].To = best
		st.assignTo[i] = best
		if best == "" {
			failing[p] = true
		} else {
			counts[best]++
		}
	}
	n.steerReleases(plan, st, liveOwner)
	return st
}

// steerReleases replaces a release towards a node cooling down for the partition by a
// release of another partition of the same task list from the same owner.
func (n *Node) steerReleases(plan Plan, st *steering, liveOwner func(Assignment) bool) {
	c := &n.c
	var moving map[PartitionID]bool
	for i, pm := range plan.Release {
		m := plan.Move(pm)
		if !n.cooling(m.Partition, m.To) {
			continue
		}
		if moving == nil {
			moving = map[PartitionID]bool{}
			for _, x := range plan.Release {
				moving[plan.Move(x).Partition] = true
			}
		}
		// A substitute of the same task list: from the same owner if it has one, else
		// from the owner holding the most of the task list (the allocator then evens
		// the owners out by a later move, steered the same way).
		tl := plan.TaskLists[pm.TaskList]
		held := map[string]int{}
		best, bestFrom := PartitionID{}, ""
		for k := 0; k < tl.Partitions; k++ {
			q := PartitionID{Domain: tl.Domain, TaskList: tl.Name, Partition: k}
			x, ok := c.rowIndex[q]
			if !ok {
				continue
			}
			r := c.rows[x]
			if r.State != Assigned || !liveOwner(r) || r.Owner == m.To {
				continue
			}
			held[r.Owner]++
			if moving[q] || n.cooling(q, m.To) {
				continue
			}
			switch {
			case r.Owner == m.From && bestFrom != m.From:
				best, bestFrom = q, r.Owner
			case bestFrom == "":
				best, bestFrom = q, r.Owner
			}
		}
		if bestFrom != "" && bestFrom != m.From {
			// No substitute from m.From: take one from the owner holding the most.
			most := -1
			for k := 0; k < tl.Partitions; k++ {
				q := PartitionID{Domain: tl.Domain, TaskList: tl.Name, Partition: k}
				x, ok := c.rowIndex[q]
				if !ok || moving[q] || n.cooling(q, m.To) {
					continue
				}
				if r := c.rows[x]; r.State == Assigned && liveOwner(r) && r.Owner != m.To && held[r.Owner] > most {
					best, most = q, held[r.Owner]
				}
			}
		}
		st.releasePart[i] = best // the zero PartitionID when there is none: no release
		if bestFrom != "" {
			moving[best] = true
		}
	}
}

// noteFailing replaces the set of partitions held because they fail everywhere, and
// reports the ones that joined it.
func (n *Node) noteFailing(now map[PartitionID]bool) {
	c := &n.c
	for _, p := range sortedKeys(now) {
		if !c.failing[p] {
			n.emit(Event{Kind: "partition_failing", Epoch: c.epoch, Partition: p,
				Detail: fmt.Sprintf("given back by every eligible worker within %v; held until a cool-down ends", n.cfg.GiveBackCoolDown)})
		}
	}
	c.failing = now
}

func (n *Node) failingSorted() []PartitionID {
	if !n.c.coord || len(n.c.failing) == 0 {
		return nil
	}
	return sortedKeys(n.c.failing)
}

func sortedStrings[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

package sim

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/helixcoord/helix/engine"
)

// checker holds what the invariant checks need between events. It is incremental: a
// node's beliefs can only start to conflict with another's when that node steps (between
// steps every belief only runs out, as clocks advance), so each step checks only the
// stepping node against the others that claim the same lease or partitions.
type checker struct {
	coords      []int32 // nodes whose last state says Coordinator
	maxEpoch    uint64  // highest epoch any node believed in
	epochHolder int32
	storeEpoch  uint64 // highest lease epoch the store ever returned
	issued      uint64 // highest lease epoch the store ever granted (E2)

	owners map[engine.PartitionID][]int32 // nodes whose last state lists the partition
	maxGen map[engine.PartitionID]genRec

	inflight []*request // Apply requests sent and not yet executed or lost
}

type genRec struct {
	gen  uint64
	node int32
}

func (c *checker) init() {
	c.owners = map[engine.PartitionID][]int32{}
	c.maxGen = map[engine.PartitionID]genRec{}
	c.epochHolder = -1
}

func (c *checker) applySent(r *request) { c.inflight = append(c.inflight, r) }

func (c *checker) applyGone(r *request) {
	if _, ok := r.op.(engine.OpApply); ok {
		c.inflight = slices.DeleteFunc(c.inflight, func(x *request) bool { return x == r })
	}
}

func (c *checker) leaseEpoch(s *Sim, e uint64) {
	if e < c.storeEpoch {
		s.fail("S1", fmt.Sprintf("the store's lease epoch went back from %d to %d", c.storeEpoch, e))
	}
	c.storeEpoch = max(c.storeEpoch, e)
}

// dropNode forgets a node's beliefs: its process ended.
func (c *checker) dropNode(s *Sim, nd *simNode) {
	for _, o := range nd.owned {
		c.removeOwner(o.Partition, nd.idx)
	}
	nd.owned = nil
	if nd.coord {
		c.coords = slices.DeleteFunc(c.coords, func(i int32) bool { return i == nd.idx })
		nd.coord = false
	}
}

// checkNode runs S1 and S3 for a node that just stepped.
func (s *Sim) checkNode(nd *simNode) {
	c := &s.check
	now := s.now

	// S1: at most one node believes it leads; epochs only grow.
	isCoord := nd.up && nd.st.Coordinator
	if isCoord != nd.coord {
		if isCoord {
			c.coords = append(c.coords, nd.idx)
		} else {
			c.coords = slices.DeleteFunc(c.coords, func(i int32) bool { return i == nd.idx })
		}
		nd.coord = isCoord
	}
	believes := nd.believesCoordinator(now)
	if believes && !s.inGrace(nd) {
		e := nd.st.Epoch
		for _, i := range c.coords {
			if o := s.nodes[i]; i != nd.idx && o.believesCoordinator(now) && !s.inGrace(o) {
				s.fail("S1", fmt.Sprintf("two coordinators: %s (epoch %d, lease until %s by its clock) and %s (epoch %d, lease until %s by its clock)",
					o.id, o.st.Epoch, fmtT(o.st.LeaseUntil), nd.id, e, fmtT(nd.st.LeaseUntil)))
				return
			}
		}
		switch {
		case e < c.maxEpoch:
			s.fail("S1", fmt.Sprintf("%s believes it leads at epoch %d after epoch %d was held", nd.id, e, c.maxEpoch))
			return
		case e == c.maxEpoch && c.epochHolder != nd.idx:
			s.fail("S1", fmt.Sprintf("%s believes it leads at epoch %d, which %s held", nd.id, e, s.nodes[c.epochHolder].id))
			return
		case e > c.maxEpoch:
			if c.maxEpoch > 0 {
				s.cover("leader_change")
				for _, r := range c.inflight {
					if r.epoch < e {
						s.cover("leader_change_with_apply_in_flight")
						break
					}
				}
			}
			c.maxEpoch, c.epochHolder = e, nd.idx
		}
		if !nd.wasCoord {
			s.metrics.newCoordinator(s, nd)
		}
	}

	nd.wasCoord = believes

	// S3: at most one node processes a partition; generations only grow.
	var cur []engine.OwnedPartition
	if nd.up {
		cur = nd.st.Owned
	}
	prev := nd.owned
	liveNow := nd.live(now)
	wasLive := nd.up && nd.clock(now) < nd.prevLive
	nd.prevLive = nd.st.LivenessUntil.Sub(T0).Nanoseconds()
	if !nd.up {
		nd.prevLive = math.MinInt64
	}
	i, j := 0, 0
	for i < len(prev) || j < len(cur) {
		var cmp int
		switch {
		case i == len(prev):
			cmp = 1
		case j == len(cur):
			cmp = -1
		default:
			cmp = engine.ComparePartitions(prev[i].Partition, cur[j].Partition)
			if cmp == 0 && prev[i].Generation != cur[j].Generation {
				// Same partition, new generation: a removal, then an addition below.
				c.removeOwner(prev[i].Partition, nd.idx)
				i++
				cmp = 1
			}
		}
		switch {
		case cmp < 0:
			c.removeOwner(prev[i].Partition, nd.idx)
			i++
		case cmp > 0:
			c.owners[cur[j].Partition] = append(c.owners[cur[j].Partition], nd.idx)
			if liveNow {
				s.checkClaim(nd, cur[j])
			}
			j++
		default:
			if liveNow && !wasLive {
				s.checkClaim(nd, cur[j])
			}
			i++
			j++
		}
		if s.viol != nil {
			break
		}
	}
	nd.owned = cur
}

func (c *checker) removeOwner(p engine.PartitionID, n int32) {
	l := c.owners[p]
	for k, x := range l {
		if x == n {
			l[k] = l[len(l)-1]
			l = l[:len(l)-1]
			break
		}
	}
	if len(l) == 0 {
		delete(c.owners, p)
	} else {
		c.owners[p] = l
	}
}

// checkClaim: nd (live) processes o from now on.
func (s *Sim) checkClaim(nd *simNode, o engine.OwnedPartition) {
	c := &s.check
	now := s.now
	for _, i := range c.owners[o.Partition] {
		if i == nd.idx {
			continue
		}
		if other := s.nodes[i]; other.live(now) {
			og := uint64(0)
			for _, x := range other.st.Owned {
				if x.Partition == o.Partition {
					og = x.Generation
				}
			}
			s.fail("S3", fmt.Sprintf("%s processed by two nodes: %s (generation %d, liveness until %s by its clock) and %s (generation %d, liveness until %s by its clock)",
				o.Partition, other.id, og, fmtT(other.st.LivenessUntil), nd.id, o.Generation, fmtT(nd.st.LivenessUntil)))
			return
		}
	}
	m := c.maxGen[o.Partition]
	if o.Generation < m.gen || (o.Generation == m.gen && m.node != nd.idx) {
		s.fail("S3", fmt.Sprintf("%s: %s processes generation %d after %s processed generation %d", o.Partition, nd.id, o.Generation, s.nodes[m.node].id, m.gen))
		return
	}
	c.maxGen[o.Partition] = genRec{o.Generation, nd.idx}
	s.metrics.processed(s, nd, o)
}

func fmtT(t time.Time) string { return fmtV(t.Sub(T0).Nanoseconds()) }

// syncTaskLists reloads the configured task lists (after an operator changed them).
func (s *Sim) syncTaskLists() {
	r, err := s.store.ListTaskLists(s.ctx)
	if err != nil {
		s.fail("store", fmt.Sprintf("list task lists: %v", err))
		return
	}
	s.tls = r.TaskLists
	s.tlCount = map[tlKey]int{}
	for _, t := range r.TaskLists {
		s.tlCount[tlKey{t.Domain, t.Name}] = t.Partitions
	}
}

func (s *Sim) configured(p engine.PartitionID) bool {
	n, ok := s.tlCount[tlKey{p.Domain, p.TaskList}]
	return ok && p.Partition < n
}

// syncRows reads the assignment rows changed since the last read and checks S4 (a
// configured partition is never Deleted) and that row generations only grow.
func (s *Sim) syncRows() {
	r, err := s.store.ReadAssignments(s.ctx, s.rowRev)
	if err != nil {
		s.fail("store", fmt.Sprintf("read assignments: %v", err))
		return
	}
	if s.rows == nil {
		s.rows = map[engine.PartitionID]engine.Assignment{}
	}
	for _, a := range r.Assignments {
		old, ok := s.rows[a.Partition]
		if ok && a.Generation < old.Generation {
			s.fail("S3", fmt.Sprintf("%s: the row's generation went back from %d to %d", a.Partition, old.Generation, a.Generation))
		}
		if a.State == engine.Deleted && s.configured(a.Partition) {
			s.fail("S4", fmt.Sprintf("%s is configured but its row was marked deleted", a.Partition))
		}
		s.rows[a.Partition] = a
	}
	s.rowRev = r.Revision
}

// configuredPresent checks S4 in full: every configured partition has a live row.
func (c *checker) configuredPresent(s *Sim) {
	for _, t := range s.tls {
		for i := 0; i < t.Partitions; i++ {
			p := engine.PartitionID{Domain: t.Domain, TaskList: t.Name, Partition: i}
			if r, ok := s.rows[p]; !ok || r.State == engine.Deleted {
				s.fail("S4", fmt.Sprintf("%s is configured but has no assignment row", p))
				return
			}
		}
	}
}

// beforeApply checks the handoff rule on a batch with a good fence that the store is
// about to judge: the coordinator must not assign a partition that a live incarnation
// still owns (Assigned, or Releasing without its acknowledgement), planned from the
// row's current revision. The store refuses such a change too, but a coordinator that
// sends one has broken the protocol S3 rests on; checking the intent catches the bug
// even behind the store's own defence.
func (c *checker) beforeApply(s *Sim, req *request, b engine.Batch) {
	var alive map[string]uint64
	for _, ch := range b.Changes {
		if ch.Kind != engine.ChangeAssign {
			continue
		}
		row, ok := s.rows[ch.Partition]
		if !ok || row.Revision != ch.Revision || (row.State != engine.Assigned && row.State != engine.Releasing) {
			continue
		}
		if slices.ContainsFunc(b.Dead, func(d engine.DeadNode) bool { return d.ID == row.Owner && d.Incarnation == row.Incarnation }) {
			continue
		}
		if alive == nil {
			alive = map[string]uint64{}
			if r, err := s.store.ListNodes(s.ctx); err == nil {
				for _, n := range r.Nodes {
					if n.Status == engine.NodeAlive {
						alive[n.ID] = n.Incarnation
					}
				}
			}
		}
		if inc, ok := alive[row.Owner]; ok && inc == row.Incarnation {
			s.fail("S3", fmt.Sprintf("coordinator %s (epoch %d) assigned %s to %s while it is %s by the live %s/%d, which has not acknowledged a release (the store refuses it; a store that did not would let two nodes process it)",
				s.nodes[req.node].id, b.Fence.Epoch, ch.Partition, ch.Owner, row.State, row.Owner, row.Incarnation))
			return
		}
	}
}

// afterApply counts moves and interesting races of a batch the store accepted (s.rows
// still holds the rows as they were before it).
func (c *checker) afterApply(s *Sim, b engine.Batch) {
	dead := map[string]bool{}
	for _, d := range b.Dead {
		dead[d.ID] = true
		s.markDead(d.ID, d.Incarnation)
	}
	if len(b.Dead) > 0 {
		s.cover("nodes_declared_dead")
	}
	for _, ch := range b.Changes {
		old := s.rows[ch.Partition]
		switch ch.Kind {
		case engine.ChangeAssign:
			if old.Generation > 0 {
				s.metrics.moves++
				if s.now >= int64(s.sc.Expect.MovesAfter) {
					s.metrics.movesCounted++
				}
			}
			if old.State == engine.Releasing {
				// Only legal when the owner died before acknowledging (the store refuses
				// it otherwise): the release raced a death.
				s.cover("release_racing_death")
			}
		case engine.ChangeUnassign:
			if old.State == engine.Releasing && dead[old.Owner] {
				s.cover("release_racing_death")
			}
		case engine.ChangeRelease:
			s.cover("release_started")
		case engine.ChangeDelete:
			s.cover("partition_deleted")
		}
	}
}

type problem struct{ inv, msg string }

// livenessProblem checks L1–L3 now and returns the first that fails.
func (s *Sim) livenessProblem() *problem {
	now := s.now
	var leaders []*simNode
	for _, nd := range s.nodes {
		if nd.believesCoordinator(now) {
			leaders = append(leaders, nd)
		}
	}
	if len(leaders) != 1 {
		return &problem{"L1", fmt.Sprintf("%d coordinators (want exactly one): %s", len(leaders), ids(leaders))}
	}
	snap := s.store.Snapshot()
	info := map[string]engine.NodeInfo{}
	for _, n := range snap.Nodes {
		info[n.ID] = n
	}
	type wk struct {
		nd    *simNode
		owned map[engine.PartitionID]uint64
		cnt   map[tlKey]int
	}
	workers := map[string]*wk{}
	var eligible []*wk
	weight := 0
	for _, nd := range s.nodes {
		if !nd.up || nd.cfg.NoWork {
			continue
		}
		in, ok := info[nd.id]
		if !ok || in.Status != engine.NodeAlive || in.Incarnation != nd.st.Incarnation || !nd.live(now) {
			continue
		}
		w := &wk{nd: nd, owned: map[engine.PartitionID]uint64{}, cnt: map[tlKey]int{}}
		for _, o := range nd.st.Owned {
			w.owned[o.Partition] = o.Generation
		}
		workers[nd.id] = w
		if !in.Draining {
			eligible = append(eligible, w)
			weight += in.Capacity
		}
	}
	if len(eligible) == 0 {
		// Every worker is draining or gone: the allocator has nowhere to put anything
		// (the plan says why); L2 and L3 have nothing to hold for.
		return nil
	}
	for _, a := range snap.Assignments {
		if !s.configured(a.Partition) {
			continue
		}
		if a.State != engine.Assigned {
			return &problem{"L2", fmt.Sprintf("%s is %s (owner %q), not assigned", a.Partition, a.State, a.Owner)}
		}
		w := workers[a.Owner]
		if w == nil || info[a.Owner].Incarnation != a.Incarnation {
			return &problem{"L2", fmt.Sprintf("%s is assigned to %s/%d, which is not a live worker", a.Partition, a.Owner, a.Incarnation)}
		}
		if g, ok := w.owned[a.Partition]; !ok || g != a.Generation {
			return &problem{"L2", fmt.Sprintf("%s is assigned to %s at generation %d, which is not processing it", a.Partition, a.Owner, a.Generation)}
		}
		w.cnt[tlKey{a.Partition.Domain, a.Partition.TaskList}]++
	}
	for _, t := range s.tls {
		k := tlKey{t.Domain, t.Name}
		for _, w := range eligible {
			c := info[w.nd.id].Capacity
			lo := t.Partitions * c / weight
			hi := lo
			if t.Partitions*c%weight != 0 {
				hi++
			}
			if n := w.cnt[k]; n < lo || n > hi {
				return &problem{"L3", fmt.Sprintf("%s/%s: %s holds %d partitions, fair share is %d–%d (capacity %d of %d)", t.Domain, t.Name, w.nd.id, n, lo, hi, c, weight)}
			}
		}
	}
	// L3, cluster-wide: each eligible worker holds the floor or ceiling of its share of
	// all partitions, not only of each task list (many small task lists must not pile
	// their extras on the same workers, and a worker that joins gets its share).
	all := 0
	for _, t := range s.tls {
		all += t.Partitions
	}
	for _, w := range eligible {
		c := info[w.nd.id].Capacity
		lo, hi := all*c/weight, (all*c+weight-1)/weight
		n := 0
		for _, cnt := range w.cnt {
			n += cnt
		}
		if n < lo || n > hi {
			return &problem{"L3", fmt.Sprintf("%s holds %d partitions in all, fair share is %d–%d (capacity %d of %d, %d partitions)", w.nd.id, n, lo, hi, c, weight, all)}
		}
	}
	for _, nd := range s.nodes {
		if w := workers[nd.id]; w != nil && info[nd.id].Draining && len(w.owned) > 0 {
			return &problem{"L3", fmt.Sprintf("draining %s still holds %d partitions", nd.id, len(w.owned))}
		}
		// The node's own view of its drain must agree with the store's flag, whoever set
		// it (an operator's helix drain reaches the node by heartbeat).
		if w := workers[nd.id]; w != nil && info[nd.id].Draining != nd.st.Draining {
			return &problem{"L3", fmt.Sprintf("%s believes draining=%v, the store's flag says %v", nd.id, nd.st.Draining, info[nd.id].Draining)}
		}
	}
	return nil
}

// endCheck runs twice: at HealAt+ConvergeWithin (L1–L3 must hold) and steadyWindow
// later (they still hold and no assignment row changed meanwhile: L4).
func (s *Sim) endCheck() {
	s.endPhase++
	bound := fmt.Sprintf(" (%v after the heal at %s)", time.Duration(s.now-s.metrics.healAt), fmtV(s.metrics.healAt))
	if p := s.livenessProblem(); p != nil {
		s.fail(p.inv, p.msg+bound)
		return
	}
	if p := s.identityProblem(); p != nil {
		s.fail(p.inv, p.msg+bound)
		return
	}
	if p := s.failingProblem(); p != nil {
		s.fail(p.inv, p.msg+bound)
		return
	}
	if s.endPhase == 1 {
		s.steadyRev = s.rowRev
		s.push(event{at: s.now + int64(steadyWindow), kind: evEnd, gen: s.healGen})
		return
	}
	if s.rowRev != s.steadyRev {
		s.fail("L4", fmt.Sprintf("assignments still changing: store revision %d → %d during the last %v%s", s.steadyRev, s.rowRev, steadyWindow, bound))
		return
	}
	if want := s.sc.Expect.Moves; want != nil && s.metrics.movesCounted != *want {
		s.fail("M1", fmt.Sprintf("%d moves since %v, the scenario expects exactly %d (the fewest that reach both levels of balance)", s.metrics.movesCounted, s.sc.Expect.MovesAfter.D(), *want))
	}
}

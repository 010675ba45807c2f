package engine

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// coordinator is the coordinator half of a Node: poll for the lease while standby; while
// holding it, renew it, and every tick read the state, declare dead nodes, plan with the
// allocator and apply the changes fenced by the epoch.
type coordinator struct {
	// term counts role changes (becoming coordinator, stepping down); replies to
	// requests of an earlier term are ignored.
	term uint64

	acquireInFlight bool
	pollNext        time.Time

	coord      bool
	epoch      uint64
	leaseUntil time.Time // conservative, node clock

	renewInFlight bool
	renewNext     time.Time

	tickNext      time.Time
	readInFlight  bool
	applyInFlight bool
	needFull      bool // next read is a full one (after election, a failed or conflicting apply)

	// The cache of the store: rows sorted by partition (index by position), revision.
	rows     []Assignment
	rowIndex map[PartitionID]int
	rev      uint64
	// releasing counts cached rows in state Releasing: handoffs waiting for an ack.
	releasing int
	nodes     []NodeInfo
	lists     []TaskList

	// What the last plan was made from; planning is skipped when nothing changed.
	planned   bool
	lastLive  []liveNode
	lastLists []TaskList
	// lastPlan is the last plan made in this term (its targets and extras, not its
	// moves), passed back as PlanInput.Previous so that the target it named is the one
	// reached, round after round (the allocator's fast path does not otherwise promise
	// to name the same one of several equally good targets twice). A new coordinator
	// (failover, or this node elected again) starts without one, which is fine: its
	// first plan is still minimal for the rows it reads, it may only name another
	// target than the old coordinator's, and from then on keeps its own.
	lastPlan *Plan
	// scratch is the allocator's working memory, kept for the term: PlanAssignments'
	// pool may be emptied by the garbage collections between two ticks, and a plan that
	// grows it afresh costs a third more (BenchmarkAlloc keeps it warm the same way).
	scratch *allocScratch

	// Give-backs (giveback.go): who gave what back when (store time), the store's time
	// of the last read, and the partitions held because they fail everywhere.
	coolDown coolDowns
	storeNow time.Time
	failing  map[PartitionID]bool
}

// liveNode is what the plan depends on about one live node. The incarnation is in it
// because a re-registration voids the rows of the old one without changing any row.
type liveNode struct {
	id          string
	incarnation uint64
	capacity    int
	draining    bool
}

// heldPollDelay decides, from the store's clock, when a standby polls a lease that
// another node holds for another left. The lease can only fall free at its expiry (or
// earlier by a graceful release), so polling every RetryPeriod would mostly ask a question
// whose answer is known: the standby polls just after the expiry instead, with a little
// jitter so standbys do not all arrive at once, but at least every LeaseTTL/2 so a graceful
// release is noticed within half a lease. A live coordinator renews before the expiry, so
// each standby costs the store about one statement per LeaseTTL − RenewInterval, not one
// per RetryPeriod; a crashed one is replaced moments after its lease runs out.
func (n *Node) heldPollDelay(left time.Duration) time.Duration {
	jitter := time.Duration(n.rng.Float64() * n.cfg.RetryJitter * float64(n.cfg.RetryPeriod) / 4)
	return min(max(left, 0), n.cfg.LeaseTTL/2) + time.Millisecond + jitter
}

// retryDelay is RetryPeriod ± RetryJitter, drawn from the node's own PRNG: the poll
// period while the lease is free or its state unknown (errors, timeouts).
func (n *Node) retryDelay() time.Duration {
	j := (2*n.rng.Float64() - 1) * n.cfg.RetryJitter
	return time.Duration(float64(n.cfg.RetryPeriod) * (1 + j))
}

func (n *Node) coordinatorTimers() {
	c := &n.c
	if c.coord && !n.now.Before(c.leaseUntil) {
		n.stepDown("lease_expired")
	}
	if !c.coord {
		if !c.acquireInFlight && !n.now.Before(c.pollNext) {
			c.acquireInFlight = true
			n.send(&pendingReq{kind: rkAcquire}, OpAcquireLease{Key: n.cfg.LeaseKey, Owner: n.owner, TTL: n.cfg.LeaseTTL})
		}
		return
	}
	if !c.renewInFlight && !n.now.Before(c.renewNext) {
		c.renewInFlight = true
		n.send(&pendingReq{kind: rkRenew}, OpRenewLease{Key: n.cfg.LeaseKey, Owner: n.owner, Epoch: c.epoch, TTL: n.cfg.LeaseTTL})
	}
	if !c.readInFlight && !c.applyInFlight && !n.now.Before(c.tickNext) {
		c.readInFlight = true
		c.tickNext = n.now.Add(n.tickInterval())
		since := c.rev
		if c.needFull {
			since = 0
		}
		n.send(&pendingReq{kind: rkReadState, full: since == 0}, OpReadState{Since: since})
	}
}

// tickInterval is Tick, or a fifth of it while handoffs are waiting for acknowledgements:
// a released partition is processed by nobody from the old owner's ack until the
// coordinator's next read sees it, so during a handoff the coordinator looks more often.
// The extra reads happen only while partitions move; steady state keeps one read per Tick.
func (n *Node) tickInterval() time.Duration {
	if n.c.releasing > 0 {
		return n.cfg.Tick / 5
	}
	return n.cfg.Tick
}

func (n *Node) coordinatorWake(add func(time.Time)) {
	c := &n.c
	if !c.coord {
		if !c.acquireInFlight {
			add(c.pollNext)
		}
		return
	}
	add(c.leaseUntil)
	if !c.renewInFlight {
		add(c.renewNext)
	}
	if !c.readInFlight && !c.applyInFlight {
		add(c.tickNext)
	}
}

func (n *Node) onAcquire(p *pendingReq, v any, err error) {
	c := &n.c
	c.acquireInFlight = false
	if n.phase >= phaseFinishing {
		// Shutting down: a grant that arrives now is given back at once.
		if r, ok := replyAs[LeaseReply](v); ok && err == nil && r.Lease.Owner == n.owner && r.Lease.Status == LeaseActive {
			n.send(&pendingReq{kind: rkRelease}, OpReleaseLease{Key: n.cfg.LeaseKey, Owner: n.owner, Epoch: r.Lease.Epoch})
			return
		}
		n.finishing--
		n.maybeStopped()
		return
	}
	if c.coord {
		return
	}
	delay := n.retryDelay()
	r, ok := replyAs[LeaseReply](v)
	if err != nil || !ok {
		var held *LeaseHeldError
		if errors.As(err, &held) {
			delay = n.heldPollDelay(held.ExpiresAt.Sub(held.Now))
		}
		c.pollNext = n.now.Add(delay)
		return
	}
	if r.Lease.Owner != n.owner || r.Lease.Status != LeaseActive {
		c.pollNext = n.now.Add(delay)
		return
	}
	until := n.leaseWindow(p)
	if !n.now.Before(until) {
		c.pollNext = n.now // granted, but the reply took too long to trust it
		return
	}
	c.coord = true
	c.term++
	c.epoch = r.Lease.Epoch
	c.leaseUntil = until
	c.renewNext = p.sent.Add(n.cfg.RenewInterval)
	c.tickNext = n.now
	c.needFull = true
	c.planned, c.lastPlan = false, nil
	n.event("became_coordinator", fmt.Sprintf("epoch %d until %v", c.epoch, until))
}

func (n *Node) onRenew(p *pendingReq, v any, err error) {
	c := &n.c
	if !c.coord || p.term != c.term {
		return
	}
	c.renewInFlight = false
	if isErr(err, ErrLeaseLost) || isErr(err, ErrFenced) {
		n.stepDown("lease_lost")
		return
	}
	r, ok := replyAs[LeaseReply](v)
	if err != nil || !ok {
		// Retry soon: the lease is still ours until leaseUntil, if a renewal lands.
		c.renewNext = n.now.Add(n.cfg.RenewInterval / 4)
		return
	}
	if r.Lease.Owner != n.owner || r.Lease.Epoch != c.epoch {
		n.stepDown("lease_lost")
		return
	}
	until := n.leaseWindow(p)
	if until.After(c.leaseUntil) {
		c.leaseUntil = until
	}
	c.renewNext = p.sent.Add(n.cfg.RenewInterval)
}

// leaseWindow is how long a grant or renewal answering p lets the holder believe it holds
// the lease: counted from the request's send, never from the reply (the store may have
// stamped the lease any time after the send).
func (n *Node) leaseWindow(p *pendingReq) time.Time {
	return n.window(p.sent, n.cfg.LeaseTTL)
}

// stepDown ends the coordinator role at once: every coordinator request in flight is
// forgotten and the cache dropped.
func (n *Node) stepDown(reason string) {
	c := &n.c
	if !c.coord {
		return
	}
	n.event("stepped_down", reason)
	c.coord = false
	c.term++
	n.dropPending(func(p *pendingReq) bool { return p.kind.coordinator() })
	c.renewInFlight, c.readInFlight, c.applyInFlight = false, false, false
	c.rows, c.rowIndex, c.rev, c.nodes, c.lists, c.releasing = nil, nil, 0, nil, nil, 0
	c.planned, c.lastLive, c.lastLists, c.lastPlan, c.scratch = false, nil, nil, nil, nil
	c.coolDown, c.failing = nil, nil
	c.leaseUntil = time.Time{}
	c.pollNext = n.now.Add(n.retryDelay())
}

func (n *Node) onReadState(p *pendingReq, v any, err error) {
	c := &n.c
	if !c.coord || p.term != c.term {
		return
	}
	c.readInFlight = false
	r, ok := replyAs[StateReply](v)
	if err != nil || !ok {
		c.needFull = true
		return
	}
	changed := n.mergeState(p.full, r)
	if p.full {
		c.needFull = false
	}
	// The read may have shown handoffs waiting for acks (our own release batch, just
	// written): tick at their rhythm from this read's send, not a whole Tick later.
	if t := p.sent.Add(n.tickInterval()); t.Before(c.tickNext) {
		c.tickNext = t
	}
	if !n.now.Before(c.leaseUntil) {
		return
	}
	n.planAndApply(changed)
}

// mergeState folds a read into the cache and reports whether any row changed.
func (n *Node) mergeState(full bool, r StateReply) bool {
	c := &n.c
	// A store may list nodes and task lists in any order (a query without ORDER BY):
	// sort them, so that everything built from them (the dead-node list of the batch,
	// the declared_dead events, the allocator's input) comes out the same whatever the
	// order of the reply.
	c.nodes = slices.SortedStableFunc(slices.Values(r.Nodes), func(a, b NodeInfo) int { return strings.Compare(a.ID, b.ID) })
	c.lists = slices.SortedStableFunc(slices.Values(r.TaskLists), compareTaskLists)
	c.rev = r.Revision
	c.storeNow = r.Now
	n.noteGiveBacks(r.Assignments)
	if full {
		c.rows = slices.Clone(r.Assignments)
		if !slices.IsSortedFunc(c.rows, byPartition) { // the contract says sorted; be safe
			slices.SortStableFunc(c.rows, byPartition)
		}
		c.rows = slices.CompactFunc(c.rows, func(a, b Assignment) bool { return a.Partition == b.Partition })
		c.rowIndex = make(map[PartitionID]int, len(c.rows))
		c.releasing = 0
		for i, a := range c.rows {
			c.rowIndex[a.Partition] = i
			if a.State == Releasing {
				c.releasing++
			}
		}
		return true
	}
	inserted := false
	for _, a := range r.Assignments {
		if i, ok := c.rowIndex[a.Partition]; ok {
			if a.Revision >= c.rows[i].Revision {
				c.releasing += releasingDelta(c.rows[i], a)
				c.rows[i] = a
			}
			continue
		}
		c.releasing += releasingDelta(Assignment{}, a)
		c.rows = append(c.rows, a)
		c.rowIndex[a.Partition] = len(c.rows) - 1
		inserted = true
	}
	if inserted {
		slices.SortStableFunc(c.rows, byPartition)
		for i, a := range c.rows {
			c.rowIndex[a.Partition] = i
		}
	}
	return len(r.Assignments) > 0
}

// PlanInputFromState is the allocator's input for a store's state as a coordinator with
// dead-after deadAfter judges it (without its throttle, previous plan or give-back
// steering): the workers are the nodes alive by status whose heartbeat is at most
// deadAfter old, and a row counts as owned only while its owner is such a node at the
// row's incarnation.
func PlanInputFromState(st StateReply, deadAfter time.Duration) PlanInput {
	workers, alive := liveWorkers(st.Nodes, deadAfter)
	return PlanInput{TaskLists: st.TaskLists, Workers: workers, Current: allocatorRows(st.Assignments, alive)}
}

// liveWorkers is the nodes that count as workers (alive by status, heartbeat at most
// deadAfter old), sorted by id, and the same nodes by id.
func liveWorkers(nodes []NodeInfo, deadAfter time.Duration) ([]Worker, map[string]NodeInfo) {
	var workers []Worker
	alive := map[string]NodeInfo{}
	for _, nd := range nodes {
		if nd.Status != NodeAlive || nd.HeartbeatAge > deadAfter {
			continue
		}
		alive[nd.ID] = nd
		workers = append(workers, Worker{ID: nd.ID, Capacity: max(nd.Capacity, 1), Draining: nd.Draining})
	}
	slices.SortFunc(workers, func(a, b Worker) int { return strings.Compare(a.ID, b.ID) })
	return workers, alive
}

// allocatorRows is rows as the allocator must see them: a row owned by an incarnation
// that is not alive is unowned (its target kept as the hint).
func allocatorRows(rows []Assignment, alive map[string]NodeInfo) []Assignment {
	out := make([]Assignment, 0, len(rows))
	for _, a := range rows {
		if a.State == Assigned || a.State == Releasing {
			if nd, ok := alive[a.Owner]; !ok || nd.Incarnation != a.Incarnation {
				a = Assignment{Partition: a.Partition, State: Unassigned, Target: a.Target, Generation: a.Generation, Revision: a.Revision}
			}
		}
		out = append(out, a)
	}
	return out
}

// compareTaskLists orders task lists by (domain, name).
func compareTaskLists(a, b TaskList) int {
	if c := strings.Compare(a.Domain, b.Domain); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// byPartition orders rows by partition, for slices.SortFunc.
func byPartition(a, b Assignment) int { return ComparePartitions(a.Partition, b.Partition) }

// releasingDelta is how the count of Releasing rows changes when row old becomes row new.
func releasingDelta(old, new Assignment) int {
	d := 0
	if old.State == Releasing {
		d--
	}
	if new.State == Releasing {
		d++
	}
	return d
}

// planAndApply is the coordinator's decision for one tick: which nodes to declare dead
// and which rows to change. In steady state it produces nothing and no write is made.
func (n *Node) planAndApply(rowsChanged bool) {
	c := &n.c
	var dead []DeadNode
	for _, nd := range c.nodes {
		if nd.Status == NodeAlive && nd.HeartbeatAge > n.cfg.DeadAfter {
			dead = append(dead, DeadNode{ID: nd.ID, Incarnation: nd.Incarnation})
		}
	}
	// alive: the live workers by id, after this tick's declarations.
	workers, alive := liveWorkers(c.nodes, n.cfg.DeadAfter)
	live := make([]liveNode, len(workers))
	for i, wk := range workers {
		live[i] = liveNode{wk.ID, alive[wk.ID].Incarnation, wk.Capacity, wk.Draining}
	}

	// In steady state nothing the plan depends on has changed since the last one (which
	// wrote nothing, or whose write the incremental read has just returned): skip it.
	// Partitions held because they fail everywhere wait for a cool-down to end, which no
	// read reports: plan again at every tick while there are any.
	if len(dead) == 0 && !rowsChanged && c.planned && len(c.failing) == 0 &&
		slices.Equal(live, c.lastLive) && slices.Equal(c.lists, c.lastLists) {
		return
	}
	c.planned, c.lastLive, c.lastLists = true, live, slices.Clone(c.lists)

	liveOwner := func(a Assignment) bool {
		if a.State != Assigned && a.State != Releasing {
			return false
		}
		nd, ok := alive[a.Owner]
		return ok && nd.Incarnation == a.Incarnation
	}
	configured := map[[2]string]int{}
	for _, tl := range c.lists {
		configured[[2]string{tl.Domain, tl.Name}] = tl.Partitions
	}
	// Rows come sorted, so consecutive rows share a task list: remember the last one.
	var lastKey [2]string
	lastCnt, lastOK, cached := 0, false, false
	isConfigured := func(p PartitionID) bool {
		if k := [2]string{p.Domain, p.TaskList}; !cached || k != lastKey {
			lastKey, cached = k, true
			lastCnt, lastOK = configured[k]
		}
		return lastOK && p.Partition >= 0 && p.Partition < lastCnt
	}

	current := allocatorRows(c.rows, alive)
	if c.scratch == nil {
		c.scratch = new(allocScratch)
	}
	plan := planWith(c.scratch, PlanInput{
		TaskLists:            c.lists,
		Workers:              workers,
		Current:              current,
		MaxInFlight:          n.cfg.MaxInFlight,
		MaxInFlightPerWorker: n.cfg.MaxInFlightPerWorker,
		Previous:             c.lastPlan,
	})
	last := plan
	last.Moves, last.Assign, last.Release = nil, nil, nil // only targets and extras are read back
	c.lastPlan = &last

	// At most one change per row; slot i is the change to c.rows[i] (Kind 0: none), so
	// the batch comes out sorted by partition without a sort.
	slot := make([]Change, len(c.rows))
	nchanges := 0
	put := func(i int, ch Change) {
		if slot[i].Kind == 0 {
			slot[i] = ch
			nchanges++
		}
	}
	steered := n.steer(plan, workers, liveOwner)
	for x, pm := range plan.Assign {
		m := plan.Move(pm)
		if steered != nil {
			if to, ok := steered.assignTo[x]; ok {
				m.To = to // "" holds it: it fails everywhere
			}
		}
		i, ok := c.rowIndex[m.Partition]
		nd, live := alive[m.To]
		if !ok || !live || liveOwner(c.rows[i]) || c.rows[i].State == Deleted {
			continue // no row to write, a vanished target, or a live owner: not ours to take
		}
		put(i, Change{Kind: ChangeAssign, Partition: m.Partition, Revision: c.rows[i].Revision, Owner: m.To, Incarnation: nd.Incarnation})
	}
	for x, pm := range plan.Release {
		m := plan.Move(pm)
		if steered != nil {
			if q, ok := steered.releasePart[x]; ok {
				if q == (PartitionID{}) {
					continue // only a node cooling down for it would take it
				}
				m.Partition = q
			}
		}
		i, ok := c.rowIndex[m.Partition]
		if !ok || c.rows[i].State != Assigned || !liveOwner(c.rows[i]) {
			continue
		}
		put(i, Change{Kind: ChangeRelease, Partition: m.Partition, Revision: c.rows[i].Revision, Target: m.To})
	}
	for i, a := range c.rows {
		switch {
		case !isConfigured(a.Partition):
			switch {
			case a.State == Deleted:
			case a.State == Assigned && liveOwner(a):
				put(i, Change{Kind: ChangeRelease, Partition: a.Partition, Revision: a.Revision})
			case a.State == Releasing && liveOwner(a):
				// wait for the owner's acknowledgement
			default:
				put(i, Change{Kind: ChangeDelete, Partition: a.Partition, Revision: a.Revision})
			}
		case (a.State == Assigned || a.State == Releasing) && !liveOwner(a):
			// The owner is dead: its own liveness timer has stopped it, no ack is awaited.
			// If the allocator did not reassign it just now, clear the owner.
			put(i, Change{Kind: ChangeUnassign, Partition: a.Partition, Revision: a.Revision})
		}
	}
	if len(dead) == 0 && nchanges == 0 {
		return
	}
	b := Batch{
		Fence:     Fence{Key: n.cfg.LeaseKey, Epoch: c.epoch},
		Dead:      dead,
		DeadAfter: n.cfg.DeadAfter,
		Changes:   make([]Change, 0, nchanges),
	}
	for _, ch := range slot {
		if ch.Kind != 0 {
			b.Changes = append(b.Changes, ch)
		}
	}
	c.applyInFlight = true
	n.send(&pendingReq{kind: rkApply, batch: &b}, OpApply{Batch: b})
}

func (n *Node) onApply(p *pendingReq, v any, err error) {
	c := &n.c
	if !c.coord || p.term != c.term {
		return
	}
	c.applyInFlight = false
	if _, ok := replyAs[ApplyReply](v); err != nil || !ok {
		n.event("apply_failed", errString(err))
		if isErr(err, ErrFenced) {
			n.stepDown("fenced")
			return
		}
		// Conflict, timeout, unavailable: the write may or may not have happened. Re-read
		// everything and plan again; never repeat blindly.
		c.needFull = true
		return
	}
	b := p.batch
	var counts [5]int
	for _, ch := range b.Changes {
		if int(ch.Kind) < len(counts) {
			counts[ch.Kind]++
		}
	}
	for _, d := range b.Dead {
		n.emit(Event{Kind: "declared_dead", Epoch: c.epoch, Node: d.ID, Detail: fmt.Sprintf("incarnation %d", d.Incarnation)})
	}
	n.event("applied", fmt.Sprintf("dead=%d assign=%d release=%d unassign=%d delete=%d",
		len(b.Dead), counts[ChangeAssign], counts[ChangeRelease], counts[ChangeUnassign], counts[ChangeDelete]))
	// Follow up at once: the next read sees our own changes (and any ack) sooner.
	c.tickNext = n.now
}

package sim

import (
	"fmt"
	"math"

	"github.com/helixcoord/helix/engine"
)

// Checks of the rules the store and the coordinator must keep beyond S1–S4: the epoch
// rules (E1, E2), all-or-nothing batches (A1), the dead-after re-check, and the
// coordinator acting only inside its own lease window.

// storeFault is one store_fault action in force.
type storeFault struct {
	kind string
	rate float64
}

var (
	errDeadlock    = fmt.Errorf("%w: Deadlock found when trying to get lock; try restarting transaction (simulated: the batch was rolled back whole)", engine.ErrUnavailable)
	errAfterCommit = fmt.Errorf("%w: connection lost after COMMIT (simulated: the batch was applied)", engine.ErrUnavailable)
)

// storeFault draws whether a store fault hits this Apply, and which.
func (s *Sim) storeFault() string {
	for _, f := range s.storeFaults {
		if f.rate >= 1 || s.faultRng.Float64() < f.rate {
			return f.kind
		}
	}
	return ""
}

// epochRules checks a lease call the store granted. E1: a renewal never changes the
// epoch (an acquire by the holder of a lease it still holds is a renewal too). E2: a
// new tenure — a lease that was free, released, retired or expired, whoever takes it,
// the previous holder included — gets an epoch above every epoch issued before.
func (c *checker) epochRules(s *Sim, op engine.Op, before engine.Lease, existed, held bool, after engine.Lease) {
	switch op := op.(type) {
	case engine.OpRenewLease:
		if after.Epoch != op.Epoch || (existed && after.Epoch != before.Epoch) {
			s.fail("E1", fmt.Sprintf("a renewal by %s at epoch %d changed the lease's epoch from %d to %d", op.Owner, op.Epoch, before.Epoch, after.Epoch))
		}
	case engine.OpAcquireLease:
		switch {
		case existed && held && before.Owner == op.Owner:
			if after.Epoch != before.Epoch {
				s.fail("E1", fmt.Sprintf("%s re-acquiring the lease it holds changed its epoch from %d to %d", op.Owner, before.Epoch, after.Epoch))
			}
		case after.Epoch <= c.issued || (existed && after.Epoch <= before.Epoch):
			prev := "free"
			if existed {
				prev = fmt.Sprintf("last held by %q at epoch %d", before.Owner, before.Epoch)
			}
			s.fail("E2", fmt.Sprintf("%s took the lease (%s) at epoch %d, not above every epoch issued before (%d)", op.Owner, prev, after.Epoch, max(c.issued, before.Epoch)))
		}
	}
	c.issued = max(c.issued, after.Epoch)
}

// atomic (A1) checks that a batch the store refused changed nothing: no row revision,
// no node declared dead.
func (c *checker) atomic(s *Sim, b engine.Batch, before []engine.NodeInfo) {
	r, err := s.store.ReadAssignments(s.ctx, s.rowRev)
	if err == nil && r.Revision != s.rowRev {
		s.fail("A1", fmt.Sprintf("a refused batch (epoch %d, %d changes) changed rows: store revision %d → %d", b.Fence.Epoch, len(b.Changes), s.rowRev, r.Revision))
		return
	}
	if len(before) == 0 {
		return
	}
	now, err := s.store.ListNodes(s.ctx)
	if err != nil {
		return
	}
	was := map[string]engine.NodeStatus{}
	for _, n := range before {
		was[n.ID] = n.Status
	}
	for _, n := range now.Nodes {
		if st, ok := was[n.ID]; ok && st != n.Status {
			s.fail("A1", fmt.Sprintf("a refused batch (epoch %d) changed %s's status", b.Fence.Epoch, n.ID))
			return
		}
	}
}

// declaredDead checks, for a batch the store accepted, that every node it declared dead
// had a heartbeat older than dead_after by the store's clock at the write: a heartbeat
// that lands between the coordinator's read and its write must win.
func (c *checker) declaredDead(s *Sim, b engine.Batch, before []engine.NodeInfo) {
	info := map[string]engine.NodeInfo{}
	for _, n := range before {
		info[n.ID] = n
	}
	for _, d := range b.Dead {
		n, ok := info[d.ID]
		if ok && n.Status == engine.NodeAlive && n.Incarnation == d.Incarnation && n.HeartbeatAge <= b.DeadAfter {
			s.fail("S3", fmt.Sprintf("the store declared %s/%d dead although its heartbeat was only %v old (dead_after %v): it may still be processing", d.ID, d.Incarnation, n.HeartbeatAge, b.DeadAfter))
			return
		}
	}
}

// checkApplyInWindow: a coordinator writes only while it believes it leads, at the
// epoch it holds, before its own conservative lease end. Past that instant another node
// may lead; a write sent later is one the node had no right to make, even if the store's
// fence happens to refuse it.
func (s *Sim) checkApplyInWindow(nd *simNode, a engine.OpApply) {
	st := nd.n.State()
	now := nd.lastNow
	end := int64(math.MinInt64)
	if st.Coordinator {
		end = st.LeaseUntil.Sub(T0).Nanoseconds()
	}
	switch {
	case !st.Coordinator:
		s.fail("S1", fmt.Sprintf("%s sent an Apply at epoch %d at %s by its clock, and is not coordinator after the step that sent it (its lease window was over)",
			nd.id, a.Batch.Fence.Epoch, fmtV(now)))
	case st.Epoch != a.Batch.Fence.Epoch || now >= end:
		s.fail("S1", fmt.Sprintf("%s sent an Apply at epoch %d at %s by its clock, outside its lease window (epoch %d until %s)",
			nd.id, a.Batch.Fence.Epoch, fmtV(now), st.Epoch, fmtT(st.LeaseUntil)))
	}
}

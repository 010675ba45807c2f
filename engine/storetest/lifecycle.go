package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// tolerance bounds how far apart two store times taken for one request may be on a real
// backend (ExpiresAt versus the reply's Now).
const tolerance = 50 * time.Millisecond

func testLease(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) {
	t.Run("acquire, re-acquire, renew, release", func(t *testing.T) {
		h := newHarness(t, newStore)
		r := h.acquire("k1", "o1", long)
		l := r.Lease
		if l.Key != "k1" || l.Owner != "o1" || l.Epoch != 1 || l.Status != engine.LeaseActive {
			t.Fatalf("first acquire: %+v, want k1 held by o1 at epoch 1", l)
		}
		if !approx(l.ExpiresAt.Sub(r.Now), long, tolerance) {
			t.Fatalf("expires %v after the reply's Now, want ttl %v", l.ExpiresAt.Sub(r.Now), long)
		}
		if got := h.lease("k1"); got.Owner != "o1" || got.Epoch != 1 || !got.ExpiresAt.Equal(l.ExpiresAt) {
			t.Fatalf("ReadLease: %+v, want %+v", got, l)
		}

		// Acquiring again while holding it is a renewal: same epoch, later expiry.
		r2 := h.acquire("k1", "o1", long)
		if r2.Lease.Epoch != 1 || r2.Lease.Owner != "o1" {
			t.Fatalf("re-acquire by the holder: %+v, want epoch 1 kept", r2.Lease)
		}
		if r2.Lease.ExpiresAt.Before(l.ExpiresAt) {
			t.Fatalf("re-acquire moved the expiry back: %v < %v", r2.Lease.ExpiresAt, l.ExpiresAt)
		}

		// Another owner is told who holds it and until when.
		_, err := h.s.AcquireLease(h.ctx, "k1", "o2", long)
		var held *engine.LeaseHeldError
		if !errors.As(err, &held) || !errors.Is(err, engine.ErrLeaseHeld) {
			t.Fatalf("acquire by another owner: %v, want *LeaseHeldError", err)
		}
		if held.Key != "k1" || held.Holder != "o1" || held.Epoch != 1 || !held.ExpiresAt.Equal(r2.Lease.ExpiresAt) {
			t.Fatalf("LeaseHeldError %+v, want holder o1 epoch 1 until %v", held, r2.Lease.ExpiresAt)
		}
		if held.Now.IsZero() || !held.Now.Before(held.ExpiresAt) {
			t.Fatalf("LeaseHeldError.Now %v must be the store time of the refusal, before the expiry %v", held.Now, held.ExpiresAt)
		}

		// Renew: same epoch, expiry now+ttl (here a shorter ttl: the lease may shrink).
		rr, err := h.s.RenewLease(h.ctx, "k1", "o1", 1, time.Minute)
		h.must(err, "RenewLease")
		if rr.Lease.Epoch != 1 || rr.Lease.Owner != "o1" || rr.Lease.Status != engine.LeaseActive {
			t.Fatalf("renew: %+v", rr.Lease)
		}
		if !approx(rr.Lease.ExpiresAt.Sub(rr.Now), time.Minute, tolerance) {
			t.Fatalf("renew: expires %v after Now, want %v", rr.Lease.ExpiresAt.Sub(rr.Now), time.Minute)
		}
		if rr.Now.Before(r.Now) {
			t.Fatalf("store time went backwards: %v then %v", r.Now, rr.Now)
		}

		// Release: free at once, epoch kept; the next acquirer gets epoch+1.
		rel, err := h.s.ReleaseLease(h.ctx, "k1", "o1", 1)
		h.must(err, "ReleaseLease")
		if rel.Lease.Status != engine.LeaseInactive || rel.Lease.Owner != "" || rel.Lease.Epoch != 1 || rel.Lease.HeldAt(rel.Now) {
			t.Fatalf("release: %+v, want inactive, no owner, epoch 1", rel.Lease)
		}
		if got := h.lease("k1"); got.Status != engine.LeaseInactive || got.Owner != "" || got.Epoch != 1 {
			t.Fatalf("ReadLease after release: %+v", got)
		}
		if l := h.acquire("k1", "o2", long).Lease; l.Epoch != 2 || l.Owner != "o2" {
			t.Fatalf("acquire after release: %+v, want o2 at epoch 2", l)
		}
		// The previous holder's epoch is dead for good.
		_, err = h.s.RenewLease(h.ctx, "k1", "o1", 1, long)
		checkErr(t, err, engine.ErrLeaseLost, "")
		// The same owner re-acquiring after its own release also gets a new epoch.
		h.release("k1", "o2", 2)
		if l := h.acquire("k1", "o2", long).Lease; l.Epoch != 3 {
			t.Fatalf("re-acquire after own release: epoch %d, want 3", l.Epoch)
		}
	})

	t.Run("keys are independent", func(t *testing.T) {
		h := newHarness(t, newStore)
		h.acquire("k1", "o1", long)
		if l := h.acquire("k2", "o2", long).Lease; l.Epoch != 1 || l.Owner != "o2" {
			t.Fatalf("k2: %+v", l)
		}
		if l := h.lease("k1"); l.Owner != "o1" {
			t.Fatalf("k1 after k2 acquired: %+v", l)
		}
	})

	t.Run("expiry by store time", func(t *testing.T) {
		h := newHarness(t, newStore)
		l := h.acquire("k1", "o1", short).Lease
		h.c.Advance(wait)
		// Expired: the holder can neither renew nor release, and anyone may take it.
		_, err := h.s.RenewLease(h.ctx, "k1", "o1", l.Epoch, long)
		checkErr(t, err, engine.ErrLeaseLost, "")
		_, err = h.s.ReleaseLease(h.ctx, "k1", "o1", l.Epoch)
		checkErr(t, err, engine.ErrLeaseLost, "")
		r, err := h.s.ReadLease(h.ctx, "k1")
		h.must(err, "ReadLease")
		if r.Lease.HeldAt(r.Now) {
			t.Fatalf("lease %+v still held at %v, after its ttl", r.Lease, r.Now)
		}
		l2 := h.acquire("k1", "o2", short).Lease
		if l2.Epoch != l.Epoch+1 || l2.Owner != "o2" {
			t.Fatalf("acquire after expiry: %+v, want o2 at epoch %d", l2, l.Epoch+1)
		}
		// The same owner taking it back after expiry starts a new tenure too.
		h.c.Advance(wait)
		if l3 := h.acquire("k1", "o2", long).Lease; l3.Epoch != l2.Epoch+1 {
			t.Fatalf("same owner after expiry: epoch %d, want %d", l3.Epoch, l2.Epoch+1)
		}
	})

	t.Run("renewal keeps it alive", func(t *testing.T) {
		h := newHarness(t, newStore)
		l := h.acquire("k1", "o1", long).Lease
		if _, err := h.s.RenewLease(h.ctx, "k1", "o1", l.Epoch, 3*short); err != nil {
			t.Fatalf("renew: %v", err)
		}
		h.c.Advance(short)
		if _, err := h.s.RenewLease(h.ctx, "k1", "o1", l.Epoch, 3*short); err != nil {
			t.Fatalf("renew before expiry: %v", err)
		}
		_, err := h.s.AcquireLease(h.ctx, "k1", "o2", long)
		checkErr(t, err, engine.ErrLeaseHeld, "")
	})

	t.Run("expiry boundary", func(t *testing.T) {
		h := newHarness(t, newStore)
		if !h.c.Manual() {
			t.Skip("exact boundaries need a manual clock")
		}
		l := h.acquire("k1", "o1", short).Lease
		h.c.Advance(short - time.Nanosecond)
		_, err := h.s.AcquireLease(h.ctx, "k1", "o2", long)
		checkErr(t, err, engine.ErrLeaseHeld, "")
		h.c.Advance(time.Nanosecond)
		// At exactly ExpiresAt the lease is expired (HeldAt is now < ExpiresAt).
		_, err = h.s.RenewLease(h.ctx, "k1", "o1", l.Epoch, long)
		checkErr(t, err, engine.ErrLeaseLost, "")
		_, err = h.s.Apply(h.ctx, engine.Batch{Fence: engine.Fence{Key: "k1", Epoch: l.Epoch}})
		checkErr(t, err, engine.ErrFenced, "")
		if l2 := h.acquire("k1", "o2", long).Lease; l2.Epoch != l.Epoch+1 {
			t.Fatalf("acquire at expiry: epoch %d", l2.Epoch)
		}
	})

	t.Run("epochs are never reissued", func(t *testing.T) {
		h := newHarness(t, newStore)
		var last uint64
		owners := []string{"o1", "o2", "o1", "o1", "o3"}
		for i, o := range owners {
			l := h.acquire("k1", o, long).Lease
			if l.Epoch <= last {
				t.Fatalf("acquire %d by %s: epoch %d, not above %d", i, o, l.Epoch, last)
			}
			last = l.Epoch
			h.release("k1", o, l.Epoch)
		}
		if last != uint64(len(owners)) {
			t.Fatalf("epoch after %d tenures = %d, want %d", len(owners), last, len(owners))
		}
	})
}

func testNodes(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) {
	t.Run("register, list, re-register", func(t *testing.T) {
		h := newHarness(t, newStore)
		labels := []engine.Label{{Key: "rack", Value: "r1"}, {Key: "zone", Value: "z"}}
		if inc := h.register("B", 2, labels...); inc != 1 {
			t.Fatalf("first incarnation %d, want 1", inc)
		}
		if inc := h.register("A", 1); inc != 1 {
			t.Fatalf("first incarnation of A %d, want 1", inc)
		}
		nr, err := h.s.ListNodes(h.ctx)
		h.must(err, "ListNodes")
		if len(nr.Nodes) != 2 || nr.Nodes[0].ID != "A" || nr.Nodes[1].ID != "B" {
			t.Fatalf("ListNodes: %+v, want A then B", nr.Nodes)
		}
		b := nr.Nodes[1]
		if b.Incarnation != 1 || b.Capacity != 2 || b.Draining || b.Status != engine.NodeAlive || len(b.Labels) != 2 || b.Labels[0] != labels[0] || b.Labels[1] != labels[1] {
			t.Fatalf("B: %+v", b)
		}
		if b.HeartbeatAge < 0 || b.HeartbeatAge > tolerance || b.LastHeartbeat.After(nr.Now) {
			t.Fatalf("B just registered: heartbeat age %v, last %v, now %v", b.HeartbeatAge, b.LastHeartbeat, nr.Now)
		}

		// Re-registering gives a larger incarnation and voids the old one; capacity and
		// labels are replaced, draining is reset.
		d := true
		_, err = h.s.UpdateNode(h.ctx, "B", engine.NodeUpdate{Draining: &d})
		h.must(err, "UpdateNode")
		if inc := h.register("B", 1); inc != 2 {
			t.Fatalf("second incarnation %d, want 2", inc)
		}
		_, err = h.s.Heartbeat(h.ctx, "B", 1, 0)
		checkErr(t, err, engine.ErrNodeDead, "")
		h.heartbeat("B", 2, 0)
		if b := h.node("B"); b.Incarnation != 2 || b.Capacity != 1 || len(b.Labels) != 0 || b.Draining || b.Status != engine.NodeAlive {
			t.Fatalf("B after re-register: %+v", b)
		}
	})

	t.Run("heartbeat age by store time", func(t *testing.T) {
		h := newHarness(t, newStore)
		inc := h.register("A", 1)
		h.c.Advance(wait)
		if a := h.node("A"); a.HeartbeatAge < wait {
			t.Fatalf("age %v after waiting %v", a.HeartbeatAge, wait)
		}
		hb := h.heartbeat("A", inc, 0)
		a := h.node("A")
		if a.HeartbeatAge >= wait || a.LastHeartbeat.After(hb.Now) || hb.Now.Sub(a.LastHeartbeat) > tolerance {
			t.Fatalf("after heartbeat at %v: last %v, age %v", hb.Now, a.LastHeartbeat, a.HeartbeatAge)
		}
		if h.c.Manual() && (a.HeartbeatAge != 0 || !a.LastHeartbeat.Equal(hb.Now)) {
			t.Fatalf("manual clock: last heartbeat %v, age %v; want %v, 0", a.LastHeartbeat, a.HeartbeatAge, hb.Now)
		}
	})

	t.Run("heartbeat reports assignment changes", func(t *testing.T) {
		h := newHarness(t, newStore)
		epoch := h.acquire("coord", "c", long).Lease.Epoch
		inc := h.register("A", 1)
		incB := h.register("B", 1)
		// The first heartbeat of an incarnation always gets its (empty) list.
		hb := h.heartbeat("A", inc, 0)
		if !hb.Changed || len(hb.Assignments) != 0 {
			t.Fatalf("first heartbeat: %+v, want Changed with no rows", hb)
		}
		known := hb.AssignRevision
		if hb := h.heartbeat("A", inc, known); hb.Changed || hb.AssignRevision != known || len(hb.Assignments) != 0 {
			t.Fatalf("heartbeat with the current revision: %+v, want unchanged", hb)
		}
		h.putTaskList("d", "t", 3)
		if hb := h.heartbeat("A", inc, known); hb.Changed {
			t.Fatalf("new unassigned rows changed A's assignments: %+v", hb)
		}
		rs := h.rows(0).Assignments
		h.apply(engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: epoch}, Changes: []engine.Change{
			{Kind: engine.ChangeAssign, Partition: rs[2].Partition, Revision: rs[2].Revision, Owner: "A", Incarnation: inc},
			{Kind: engine.ChangeAssign, Partition: rs[0].Partition, Revision: rs[0].Revision, Owner: "A", Incarnation: inc},
			{Kind: engine.ChangeAssign, Partition: rs[1].Partition, Revision: rs[1].Revision, Owner: "B", Incarnation: incB},
		}})
		hb = h.heartbeat("A", inc, known)
		if !hb.Changed || hb.AssignRevision == known || len(hb.Assignments) != 2 {
			t.Fatalf("after assigning two rows: %+v", hb)
		}
		checkSorted(t, hb.Assignments)
		for _, a := range hb.Assignments {
			if a.Owner != "A" || a.Incarnation != inc || a.State != engine.Assigned || a.Generation != 1 {
				t.Fatalf("A's row %+v", a)
			}
		}
		known = hb.AssignRevision
		// Releasing rows are still the node's (it must stop them and acknowledge).
		p0 := h.row(rs[0].Partition)
		h.apply(engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: epoch}, Changes: []engine.Change{
			{Kind: engine.ChangeRelease, Partition: p0.Partition, Revision: p0.Revision, Target: "B"},
		}})
		hb = h.heartbeat("A", inc, known)
		if !hb.Changed || len(hb.Assignments) != 2 || hb.Assignments[0].State != engine.Releasing || hb.Assignments[0].Target != "B" {
			t.Fatalf("after a release: %+v", hb)
		}
		known = hb.AssignRevision
		_, err := h.s.AckRelease(h.ctx, engine.Ack{Partition: p0.Partition, Node: "A", Incarnation: inc, Generation: 1})
		h.must(err, "AckRelease")
		hb = h.heartbeat("A", inc, known)
		if !hb.Changed || len(hb.Assignments) != 1 || hb.Assignments[0].Partition != rs[2].Partition {
			t.Fatalf("after the ack: %+v", hb)
		}
		// A new incarnation does not inherit the old one's rows.
		inc2 := h.register("A", 1)
		hb = h.heartbeat("A", inc2, hb.AssignRevision)
		if !hb.Changed || len(hb.Assignments) != 0 {
			t.Fatalf("new incarnation: %+v, want Changed with no rows", hb)
		}
	})

	t.Run("heartbeat reports incoming partitions", func(t *testing.T) {
		h := newHarness(t, newStore)
		epoch := h.acquire("coord", "c", long).Lease.Epoch
		fence := engine.Fence{Key: "coord", Epoch: epoch}
		incA, incB, incC := h.register("A", 1), h.register("B", 1), h.register("C", 1)
		h.putTaskList("d", "t", 3)
		p0, p1, p2 := pid("d", "t", 0), pid("d", "t", 1), pid("d", "t", 2)
		assign := func(p engine.PartitionID, owner string, inc uint64) {
			h.t.Helper()
			h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p, Revision: h.row(p).Revision, Owner: owner, Incarnation: inc}}})
		}
		release := func(p engine.PartitionID, target string) {
			h.t.Helper()
			h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeRelease, Partition: p, Revision: h.row(p).Revision, Target: target}}})
		}
		ack := func(p engine.PartitionID) {
			h.t.Helper()
			_, err := h.s.AckRelease(h.ctx, engine.Ack{Partition: p, Node: "A", Incarnation: incA, Generation: h.row(p).Generation})
			h.must(err, "AckRelease")
		}
		assign(p0, "A", incA)
		assign(p1, "A", incA)
		assign(p2, "A", incA)
		known := map[string]uint64{}
		incs := map[string]uint64{"A": incA, "B": incB, "C": incC}
		// expect heartbeats id with its last known revision: changed or not, and (when
		// changed) exactly the incoming partitions and the owned ones.
		expect := func(what, id string, changed bool, incoming []engine.PartitionID, owned ...engine.PartitionID) {
			h.t.Helper()
			hb := h.heartbeat(id, incs[id], known[id])
			if hb.Changed != changed {
				t.Fatalf("%s: %s's heartbeat Changed=%v (revision %d → %d), want %v", what, id, hb.Changed, known[id], hb.AssignRevision, changed)
			}
			if !changed {
				if hb.AssignRevision != known[id] || len(hb.Incoming) != 0 || len(hb.Assignments) != 0 {
					t.Fatalf("%s: unchanged heartbeat of %s carries %+v", what, id, hb)
				}
				return
			}
			if hb.AssignRevision == known[id] {
				t.Fatalf("%s: %s's heartbeat says Changed at the same revision %d", what, id, hb.AssignRevision)
			}
			known[id] = hb.AssignRevision
			if !slices.Equal(hb.Incoming, incoming) {
				t.Fatalf("%s: %s's incoming %v, want %v", what, id, hb.Incoming, incoming)
			}
			var got []engine.PartitionID
			for _, a := range hb.Assignments {
				got = append(got, a.Partition)
			}
			if !slices.Equal(got, owned) {
				t.Fatalf("%s: %s's rows %v, want %v", what, id, got, owned)
			}
		}
		none := []engine.PartitionID(nil)
		expect("start", "A", true, none, p0, p1, p2)
		expect("start", "B", true, none)
		expect("start", "C", true, none)

		// Releases towards B (p2 first: Incoming is sorted, not in release order) bump
		// B's revision; C is not involved and stays unchanged.
		release(p2, "B")
		expect("release of p2 to B", "B", true, []engine.PartitionID{p2})
		release(p0, "B")
		expect("release of p0 to B", "B", true, []engine.PartitionID{p0, p2})
		expect("releases to B", "C", false, nil)
		expect("releases to B", "B", false, nil) // nothing new: one statement, no lists
		// A release with no target (shrink, delete) is coming to nobody.
		release(p1, "")
		expect("release of p1 to nobody", "B", false, nil)
		expect("release of p1 to nobody", "C", false, nil)

		// The ack ends the Releasing state: B learns of it, and p2 stays on its way to B
		// (Unassigned, Target kept) until the coordinator assigns it.
		ack(p2)
		expect("ack of p2", "B", true, []engine.PartitionID{p0, p2})
		expect("ack of p2", "C", false, nil)
		assign(p2, "B", incB)
		expect("assignment of p2 to B", "B", true, []engine.PartitionID{p0}, p2)
		// p0 is acknowledged and then given to C instead: it is no longer coming to B.
		ack(p0)
		expect("ack of p0", "B", true, []engine.PartitionID{p0}, p2)
		assign(p0, "C", incC)
		expect("assignment of p0 to C", "B", true, none, p2)
		expect("assignment of p0 to C", "C", true, none, p0)
		expect("handoffs", "A", true, []engine.PartitionID(nil), p1)

		// Target names a node id, not an incarnation: a re-registered C still sees what
		// is coming to it.
		release(p2, "C")
		incs["C"] = h.register("C", 1)
		expect("C re-registered", "C", true, []engine.PartitionID{p2})
	})

	t.Run("a dead owner's releasing row stays on its way to the target", func(t *testing.T) {
		h := newHarness(t, newStore)
		epoch := h.acquire("coord", "c", long).Lease.Epoch
		fence := engine.Fence{Key: "coord", Epoch: epoch}
		incA, incB := h.register("A", 1), h.register("B", 1)
		h.putTaskList("d", "t", 1)
		p := pid("d", "t", 0)
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p, Revision: h.row(p).Revision, Owner: "A", Incarnation: incA}}})
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeRelease, Partition: p, Revision: h.row(p).Revision, Target: "B"}}})
		hb := h.heartbeat("B", incB, 0)
		if !slices.Equal(hb.Incoming, []engine.PartitionID{p}) {
			t.Fatalf("B's incoming after the release: %v", hb.Incoming)
		}
		known := hb.AssignRevision
		// A falls silent and is declared dead; its row is unassigned without an ack.
		h.c.Advance(3 * short)
		h.heartbeat("B", incB, known)
		h.apply(engine.Batch{Fence: fence, DeadAfter: 2 * short, Dead: []engine.DeadNode{{ID: "A", Incarnation: incA}},
			Changes: []engine.Change{{Kind: engine.ChangeUnassign, Partition: p, Revision: h.row(p).Revision}}})
		hb = h.heartbeat("B", incB, known)
		if !hb.Changed || !slices.Equal(hb.Incoming, []engine.PartitionID{p}) {
			t.Fatalf("B after the owner's death: %+v, want Changed with %v incoming", hb, p)
		}
		known = hb.AssignRevision
		// The task list goes away: the row is deleted and no longer coming to B.
		_, err := h.s.DeleteTaskList(h.ctx, "d", "t")
		h.must(err, "DeleteTaskList")
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeDelete, Partition: p, Revision: h.row(p).Revision}}})
		hb = h.heartbeat("B", incB, known)
		if !hb.Changed || len(hb.Incoming) != 0 {
			t.Fatalf("B after the delete: %+v, want Changed with nothing incoming", hb)
		}
	})

	t.Run("deregister", func(t *testing.T) {
		h := newHarness(t, newStore)
		inc := h.register("A", 1)
		r, err := h.s.DeregisterNode(h.ctx, "A", inc)
		h.must(err, "DeregisterNode")
		if r.Now.IsZero() {
			t.Fatal("reply without store time")
		}
		_, err = h.s.Heartbeat(h.ctx, "A", inc, 0)
		checkErr(t, err, engine.ErrNodeDead, "")
		if a := h.node("A"); a.Status != engine.NodeDead || a.Incarnation != inc {
			t.Fatalf("after deregister: %+v", a)
		}
		// Idempotent: a retried deregistration (reply lost) succeeds.
		before := h.dump()
		_, err = h.s.DeregisterNode(h.ctx, "A", inc)
		h.must(err, "second DeregisterNode")
		h.sameDump(before, "repeated deregistration")
		// Registering again revives the id with a new incarnation.
		if inc2 := h.register("A", 1); inc2 <= inc {
			t.Fatalf("incarnation after deregister %d, not above %d", inc2, inc)
		}
		// Deregistering the replaced incarnation leaves the new one alone.
		_, err = h.s.DeregisterNode(h.ctx, "A", inc)
		h.must(err, "deregister a replaced incarnation")
		if a := h.node("A"); a.Status != engine.NodeAlive {
			t.Fatalf("deregistering the old incarnation killed the new one: %+v", a)
		}
	})

	t.Run("update node", func(t *testing.T) {
		h := newHarness(t, newStore)
		inc := h.register("A", 1, engine.Label{Key: "k", Value: "v"})
		d, c := true, 5
		_, err := h.s.UpdateNode(h.ctx, "A", engine.NodeUpdate{Draining: &d})
		h.must(err, "UpdateNode(draining)")
		if a := h.node("A"); !a.Draining || a.Capacity != 1 || len(a.Labels) != 1 {
			t.Fatalf("after draining: %+v", a)
		}
		_, err = h.s.UpdateNode(h.ctx, "A", engine.NodeUpdate{Capacity: &c})
		h.must(err, "UpdateNode(capacity)")
		l := []engine.Label{{Key: "a", Value: "1"}, {Key: "b", Value: ""}}
		_, err = h.s.UpdateNode(h.ctx, "A", engine.NodeUpdate{Labels: &l})
		h.must(err, "UpdateNode(labels)")
		a := h.node("A")
		if !a.Draining || a.Capacity != 5 || len(a.Labels) != 2 || a.Labels[0] != l[0] || a.Labels[1] != l[1] || a.Incarnation != inc || a.Status != engine.NodeAlive {
			t.Fatalf("after updates: %+v", a)
		}
		// The caller's slice is not retained.
		l[0].Value = "changed"
		if a := h.node("A"); a.Labels[0].Value != "1" {
			t.Fatalf("store kept a reference to the caller's labels: %+v", a.Labels)
		}
		u := false
		_, err = h.s.UpdateNode(h.ctx, "A", engine.NodeUpdate{Draining: &u})
		h.must(err, "UpdateNode(undrain)")
		if a := h.node("A"); a.Draining {
			t.Fatalf("undrain: %+v", a)
		}
		// Updating does not count as a heartbeat, nor revive a dead incarnation.
		_, err = h.s.DeregisterNode(h.ctx, "A", inc)
		h.must(err, "DeregisterNode")
		_, err = h.s.UpdateNode(h.ctx, "A", engine.NodeUpdate{Draining: &d})
		h.must(err, "UpdateNode on a dead node")
		if a := h.node("A"); a.Status != engine.NodeDead || !a.Draining {
			t.Fatalf("update of a dead node: %+v", a)
		}
	})
}

// testDrainFlagReachesHeartbeat: a change of a node's draining flag by anyone (an
// operator's helix drain) grows its assignment revision, so its next heartbeat is
// Changed and reports the flag; a write that changes nothing does not.
func testDrainFlagReachesHeartbeat(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) {
	h := newHarness(t, newStore)
	inc := h.register("A", 1)
	r := h.heartbeat("A", inc, 0)
	known := r.AssignRevision
	if r = h.heartbeat("A", inc, known); r.Changed {
		t.Fatalf("steady heartbeat changed: %+v", r)
	}
	update := func(u engine.NodeUpdate) {
		t.Helper()
		_, err := h.s.UpdateNode(h.ctx, "A", u)
		h.must(err, "UpdateNode")
	}
	yes, no, c := true, false, 3
	for _, step := range []struct {
		name    string
		u       engine.NodeUpdate
		changed bool
	}{
		{"drain", engine.NodeUpdate{Draining: &yes}, true},
		{"drain again", engine.NodeUpdate{Draining: &yes}, false},
		{"capacity", engine.NodeUpdate{Capacity: &c}, false},
		{"undrain", engine.NodeUpdate{Draining: &no}, true},
	} {
		update(step.u)
		r = h.heartbeat("A", inc, known)
		if r.Changed != step.changed || (r.Changed && r.Draining != *step.u.Draining) {
			t.Fatalf("%s: heartbeat changed %v draining %v; want changed %v and the flag", step.name, r.Changed, r.Draining, step.changed)
		}
		known = r.AssignRevision
	}
}

func testTaskLists(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) {
	t.Run("put creates rows, resize, list", func(t *testing.T) {
		h := newHarness(t, newStore)
		h.putTaskList("d2", "a", 2)
		h.putTaskList("d1", "z", 1)
		h.putTaskList("d1", "b", 3)
		tr, err := h.s.ListTaskLists(h.ctx)
		h.must(err, "ListTaskLists")
		want := []engine.TaskList{{Domain: "d1", Name: "b", Partitions: 3}, {Domain: "d1", Name: "z", Partitions: 1}, {Domain: "d2", Name: "a", Partitions: 2}}
		if len(tr.TaskLists) != len(want) {
			t.Fatalf("ListTaskLists: %+v, want %+v", tr.TaskLists, want)
		}
		for i := range want {
			if tr.TaskLists[i] != want[i] {
				t.Fatalf("ListTaskLists: %+v, want %+v", tr.TaskLists, want)
			}
		}
		ar := h.rows(0)
		if len(ar.Assignments) != 6 {
			t.Fatalf("%d rows, want 6: %+v", len(ar.Assignments), ar.Assignments)
		}
		checkSorted(t, ar.Assignments)
		seen := map[uint64]bool{}
		for _, r := range ar.Assignments {
			if r.State != engine.Unassigned || r.Owner != "" || r.Generation != 0 || r.Revision == 0 || r.Revision > ar.Revision || seen[r.Revision] {
				t.Fatalf("new row %+v (store revision %d)", r, ar.Revision)
			}
			seen[r.Revision] = true
		}
		if ar.Revision != 6 {
			t.Fatalf("store revision %d after creating 6 rows, want 6 (one per changed row)", ar.Revision)
		}

		// Same size again: nothing changes.
		before := h.dump()
		h.putTaskList("d1", "b", 3)
		h.sameDump(before, "putting an unchanged task list")

		// Growing adds rows 3 and 4 only.
		rev := ar.Revision
		h.putTaskList("d1", "b", 5)
		inc := h.rows(rev)
		if len(inc.Assignments) != 2 || inc.Assignments[0].Partition != pid("d1", "b", 3) || inc.Assignments[1].Partition != pid("d1", "b", 4) {
			t.Fatalf("rows since %d after growing: %+v", rev, inc.Assignments)
		}
		if inc.Assignments[0].Revision != rev+1 || inc.Assignments[1].Revision != rev+2 || inc.Revision != rev+2 {
			t.Fatalf("revisions after growing: %+v (store %d), want %d, %d in partition order", inc.Assignments, inc.Revision, rev+1, rev+2)
		}
		// Shrinking keeps the rows beyond the new size for the coordinator.
		rev = inc.Revision
		h.putTaskList("d1", "b", 1)
		if got := h.rows(rev); len(got.Assignments) != 0 || got.Revision != rev {
			t.Fatalf("shrinking changed rows: %+v", got)
		}
		if got := h.rows(0); len(got.Assignments) != 8 {
			t.Fatalf("%d rows after shrinking, want 8", len(got.Assignments))
		}
		tr, _ = h.s.ListTaskLists(h.ctx)
		if tr.TaskLists[0].Partitions != 1 {
			t.Fatalf("after shrinking: %+v", tr.TaskLists)
		}
	})

	t.Run("delete keeps rows; tombstones revive with their generation", func(t *testing.T) {
		h := newHarness(t, newStore)
		epoch := h.acquire("coord", "c", long).Lease.Epoch
		inc := h.register("A", 1)
		fence := engine.Fence{Key: "coord", Epoch: epoch}
		h.putTaskList("d", "t", 2)
		p0, p1 := pid("d", "t", 0), pid("d", "t", 1)
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p0, Revision: h.row(p0).Revision, Owner: "A", Incarnation: inc}}})
		_, err := h.s.DeleteTaskList(h.ctx, "d", "t")
		h.must(err, "DeleteTaskList")
		tr, _ := h.s.ListTaskLists(h.ctx)
		if len(tr.TaskLists) != 0 {
			t.Fatalf("task lists after delete: %+v", tr.TaskLists)
		}
		if r := h.row(p0); r.State != engine.Assigned || r.Owner != "A" {
			t.Fatalf("delete touched the rows: %+v", r)
		}
		// The coordinator releases and deletes: release → ack → delete.
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{
			{Kind: engine.ChangeRelease, Partition: p0, Revision: h.row(p0).Revision},
			{Kind: engine.ChangeDelete, Partition: p1, Revision: h.row(p1).Revision},
		}})
		_, err = h.s.AckRelease(h.ctx, engine.Ack{Partition: p0, Node: "A", Incarnation: inc, Generation: 1})
		h.must(err, "AckRelease")
		rev := h.rows(0).Revision
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeDelete, Partition: p0, Revision: h.row(p0).Revision}}})
		got := h.rows(rev)
		if len(got.Assignments) != 1 || got.Assignments[0].State != engine.Deleted || got.Assignments[0].Generation != 1 || got.Assignments[0].Owner != "" || got.Assignments[0].Epoch != epoch {
			t.Fatalf("tombstone: %+v", got.Assignments)
		}
		// A deleted row cannot be deleted again or assigned.
		_, err = h.s.Apply(h.ctx, engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeDelete, Partition: p0, Revision: h.row(p0).Revision}}})
		checkErr(t, err, engine.ErrConflict, "")
		// Putting the task list back revives both tombstones, generations kept.
		rev = h.rows(0).Revision
		h.putTaskList("d", "t", 2)
		got = h.rows(rev)
		if len(got.Assignments) != 2 {
			t.Fatalf("revived rows: %+v", got.Assignments)
		}
		for i, want := range []uint64{1, 0} {
			r := got.Assignments[i]
			if r.State != engine.Unassigned || r.Generation != want || r.Owner != "" {
				t.Fatalf("revived %+v, want Unassigned at generation %d", r, want)
			}
		}
		// Assigning it again continues the generation.
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p0, Revision: h.row(p0).Revision, Owner: "A", Incarnation: inc}}})
		if r := h.row(p0); r.Generation != 2 {
			t.Fatalf("generation after revival and assignment: %d, want 2", r.Generation)
		}
	})
}

func testAssignments(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) {
	t.Run("handoff: assign, release, ack, assign", func(t *testing.T) {
		h := newHarness(t, newStore)
		epoch := h.acquire("coord", "c", long).Lease.Epoch
		fence := engine.Fence{Key: "coord", Epoch: epoch}
		incA, incB := h.register("A", 1), h.register("B", 1)
		h.putTaskList("d", "t", 3)
		p := pid("d", "t", 1)
		rev := h.rows(0).Revision
		ar := h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p, Revision: h.row(p).Revision, Owner: "A", Incarnation: incA}}})
		if ar.Revision != rev+1 || ar.Now.IsZero() {
			t.Fatalf("apply reply %+v, want revision %d", ar, rev+1)
		}
		got := h.rows(rev)
		want := engine.Assignment{Partition: p, Owner: "A", Incarnation: incA, Generation: 1, State: engine.Assigned, Epoch: epoch, Revision: rev + 1}
		if len(got.Assignments) != 1 || got.Assignments[0] != want {
			t.Fatalf("rows since %d: %+v, want [%+v]", rev, got.Assignments, want)
		}
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeRelease, Partition: p, Revision: rev + 1, Target: "B"}}})
		want.State, want.Target, want.Revision = engine.Releasing, "B", rev+2
		if r := h.row(p); r != want {
			t.Fatalf("releasing: %+v, want %+v", r, want)
		}
		// Before the ack the row cannot go to B.
		_, err := h.s.Apply(h.ctx, engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p, Revision: rev + 2, Owner: "B", Incarnation: incB}}})
		checkErr(t, err, engine.ErrConflict, "")
		r, err := h.s.AckRelease(h.ctx, engine.Ack{Partition: p, Node: "A", Incarnation: incA, Generation: 1})
		h.must(err, "AckRelease")
		if r.Now.IsZero() {
			t.Fatal("ack reply without store time")
		}
		// Acknowledged: Unassigned, Target kept as a hint, epoch of the last fenced write.
		want = engine.Assignment{Partition: p, Generation: 1, State: engine.Unassigned, Target: "B", Epoch: epoch, Revision: rev + 3}
		if r := h.row(p); r != want {
			t.Fatalf("after ack: %+v, want %+v", r, want)
		}
		// A repeated ack (reply lost) is a conflict, and changes nothing.
		before := h.dump()
		_, err = h.s.AckRelease(h.ctx, engine.Ack{Partition: p, Node: "A", Incarnation: incA, Generation: 1})
		checkErr(t, err, engine.ErrConflict, "")
		h.sameDump(before, "repeated ack")
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p, Revision: rev + 3, Owner: "B", Incarnation: incB}}})
		want = engine.Assignment{Partition: p, Owner: "B", Incarnation: incB, Generation: 2, State: engine.Assigned, Epoch: epoch, Revision: rev + 4}
		if r := h.row(p); r != want {
			t.Fatalf("reassigned: %+v, want %+v", r, want)
		}
	})

	t.Run("revisions: one per changed row, in batch order", func(t *testing.T) {
		h := newHarness(t, newStore)
		epoch := h.acquire("coord", "c", long).Lease.Epoch
		inc := h.register("A", 1)
		h.putTaskList("d", "t", 4)
		rev := h.rows(0).Revision
		order := []int{3, 0, 2}
		var cs []engine.Change
		for _, i := range order {
			p := pid("d", "t", i)
			cs = append(cs, engine.Change{Kind: engine.ChangeAssign, Partition: p, Revision: h.row(p).Revision, Owner: "A", Incarnation: inc})
		}
		ar := h.apply(engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: epoch}, Changes: cs})
		if ar.Revision != rev+3 {
			t.Fatalf("revision after 3 changes: %d, want %d", ar.Revision, rev+3)
		}
		got := h.rows(rev)
		checkSorted(t, got.Assignments)
		if len(got.Assignments) != 3 {
			t.Fatalf("rows since %d: %+v", rev, got.Assignments)
		}
		for k, i := range order {
			if r := h.row(pid("d", "t", i)); r.Revision != rev+uint64(k)+1 {
				t.Fatalf("row %d: revision %d, want %d (batch order)", i, r.Revision, rev+uint64(k)+1)
			}
		}
		// Nothing new since the latest revision; an empty batch changes nothing.
		before := h.dump()
		ar = h.apply(engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: epoch}})
		if ar.Revision != rev+3 {
			t.Fatalf("empty batch moved the revision to %d", ar.Revision)
		}
		h.sameDump(before, "an empty batch")
		if got := h.rows(rev + 3); len(got.Assignments) != 0 || got.Revision != rev+3 {
			t.Fatalf("rows since the latest revision: %+v", got)
		}
		// A row changed twice is returned once, at its latest revision.
		p := pid("d", "t", 3)
		h.apply(engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: epoch}, Changes: []engine.Change{{Kind: engine.ChangeRelease, Partition: p, Revision: h.row(p).Revision}}})
		got = h.rows(rev)
		if len(got.Assignments) != 3 || got.Assignments[2].Partition != p || got.Assignments[2].Revision != rev+4 {
			t.Fatalf("rows since %d after a second change: %+v", rev, got.Assignments)
		}
	})

	t.Run("read state is one snapshot", func(t *testing.T) {
		h := newHarness(t, newStore)
		h.register("B", 1)
		h.register("A", 3)
		h.putTaskList("d", "b", 2)
		h.putTaskList("d", "a", 1)
		sr, err := h.s.ReadState(h.ctx, 0)
		h.must(err, "ReadState")
		if len(sr.Nodes) != 2 || sr.Nodes[0].ID != "A" || sr.Nodes[0].Capacity != 3 || len(sr.TaskLists) != 2 || sr.TaskLists[0].Name != "a" || len(sr.Assignments) != 3 || sr.Revision != 3 {
			t.Fatalf("ReadState(0): %+v", sr)
		}
		checkSorted(t, sr.Assignments)
		if sr.Assignments[0].Partition != pid("d", "a", 0) {
			t.Fatalf("first row %v, want d/a/0", sr.Assignments[0].Partition)
		}
		sr2, err := h.s.ReadState(h.ctx, sr.Revision)
		h.must(err, "ReadState(since)")
		if len(sr2.Assignments) != 0 || len(sr2.Nodes) != 2 || len(sr2.TaskLists) != 2 || sr2.Revision != sr.Revision {
			t.Fatalf("ReadState(%d): %+v", sr.Revision, sr2)
		}
	})

	t.Run("dead nodes: declare, take over, late heartbeat refused", func(t *testing.T) {
		h := newHarness(t, newStore)
		epoch := h.acquire("coord", "c", long).Lease.Epoch
		fence := engine.Fence{Key: "coord", Epoch: epoch}
		incA, incB := h.register("A", 1), h.register("B", 1)
		h.putTaskList("d", "t", 3)
		p0, p1, p2 := pid("d", "t", 0), pid("d", "t", 1), pid("d", "t", 2)
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{
			{Kind: engine.ChangeAssign, Partition: p0, Revision: h.row(p0).Revision, Owner: "A", Incarnation: incA},
			{Kind: engine.ChangeAssign, Partition: p1, Revision: h.row(p1).Revision, Owner: "A", Incarnation: incA},
			{Kind: engine.ChangeAssign, Partition: p2, Revision: h.row(p2).Revision, Owner: "A", Incarnation: incA},
		}})
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeRelease, Partition: p2, Revision: h.row(p2).Revision, Target: "B"}}})
		// dead_after is 2·short and A stays silent for 3·short; B heartbeats just before
		// the batches, so on a real-time backend it has a margin of 2·short to stay fresh.
		deadAfter := 2 * short
		h.c.Advance(3 * short)
		h.heartbeat("B", incB, 0)

		// B is not dead: the whole batch is refused.
		bad := engine.Batch{Fence: fence, DeadAfter: deadAfter, Dead: []engine.DeadNode{{ID: "A", Incarnation: incA}, {ID: "B", Incarnation: incB}}}
		before := h.dump()
		_, err := h.s.Apply(h.ctx, bad)
		checkErr(t, err, engine.ErrConflict, "")
		h.sameDump(before, "declaring a fresh node dead")

		// A is: declared dead, its assigned row goes straight to B (generation+1), the
		// other is unassigned, the releasing one needs no ack.
		h.apply(engine.Batch{Fence: fence, DeadAfter: deadAfter, Dead: []engine.DeadNode{{ID: "A", Incarnation: incA}}, Changes: []engine.Change{
			{Kind: engine.ChangeAssign, Partition: p0, Revision: h.row(p0).Revision, Owner: "B", Incarnation: incB},
			{Kind: engine.ChangeUnassign, Partition: p1, Revision: h.row(p1).Revision},
			{Kind: engine.ChangeAssign, Partition: p2, Revision: h.row(p2).Revision, Owner: "B", Incarnation: incB},
		}})
		if a := h.node("A"); a.Status != engine.NodeDead {
			t.Fatalf("A after being declared dead: %+v", a)
		}
		if r := h.row(p0); r.Owner != "B" || r.Generation != 2 || r.State != engine.Assigned {
			t.Fatalf("p0 taken over: %+v", r)
		}
		if r := h.row(p1); r.Owner != "" || r.Incarnation != 0 || r.State != engine.Unassigned || r.Generation != 1 {
			t.Fatalf("p1 unassigned: %+v", r)
		}
		if r := h.row(p2); r.Owner != "B" || r.Generation != 2 || r.Target != "" {
			t.Fatalf("p2 taken over: %+v", r)
		}
		_, err = h.s.Heartbeat(h.ctx, "A", incA, 0)
		checkErr(t, err, engine.ErrNodeDead, "")
		_, err = h.s.AckRelease(h.ctx, engine.Ack{Partition: p2, Node: "A", Incarnation: incA, Generation: 1})
		checkErr(t, err, engine.ErrNodeDead, "")
		// Declaring it dead again is idempotent (a retried batch), even with a fresh-looking
		// heartbeat bound.
		h.apply(engine.Batch{Fence: fence, DeadAfter: long, Dead: []engine.DeadNode{{ID: "A", Incarnation: incA}}})
		// A comes back with a new incarnation and can be given work again.
		incA2 := h.register("A", 1)
		if incA2 <= incA {
			t.Fatalf("incarnation %d after death, not above %d", incA2, incA)
		}
		h.apply(engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p1, Revision: h.row(p1).Revision, Owner: "A", Incarnation: incA2}}})
		hb := h.heartbeat("A", incA2, 0)
		if len(hb.Assignments) != 1 || hb.Assignments[0].Partition != p1 || hb.Assignments[0].Generation != 2 {
			t.Fatalf("A's new incarnation: %+v", hb)
		}
		// The replaced incarnation of a registered node counts as dead too.
		h.apply(engine.Batch{Fence: fence, DeadAfter: long, Dead: []engine.DeadNode{{ID: "A", Incarnation: incA}}})
		if a := h.node("A"); a.Status != engine.NodeAlive || a.Incarnation != incA2 {
			t.Fatalf("declaring the replaced incarnation dead touched the new one: %+v", a)
		}
	})

	t.Run("a row written at a higher epoch refuses lower ones", func(t *testing.T) {
		// Two leases stand in for a lease table reset (failover to a replica that lost
		// the last grants): k1 is at epoch 3, k2 at epoch 1, both held.
		h := newHarness(t, newStore)
		for _, o := range []string{"o1", "o2"} {
			l := h.acquire("k1", o, long).Lease
			h.release("k1", o, l.Epoch)
		}
		hi := h.acquire("k1", "o3", long).Lease.Epoch
		lo := h.acquire("k2", "o1", long).Lease.Epoch
		if hi != 3 || lo != 1 {
			t.Fatalf("epochs %d, %d; want 3, 1", hi, lo)
		}
		inc := h.register("A", 1)
		h.putTaskList("d", "t", 2)
		p0, p1 := pid("d", "t", 0), pid("d", "t", 1)
		h.apply(engine.Batch{Fence: engine.Fence{Key: "k1", Epoch: hi}, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p0, Revision: h.row(p0).Revision, Owner: "A", Incarnation: inc}}})
		before := h.dump()
		_, err := h.s.Apply(h.ctx, engine.Batch{Fence: engine.Fence{Key: "k2", Epoch: lo}, Changes: []engine.Change{
			{Kind: engine.ChangeAssign, Partition: p1, Revision: h.row(p1).Revision, Owner: "A", Incarnation: inc},
			{Kind: engine.ChangeRelease, Partition: p0, Revision: h.row(p0).Revision},
		}})
		checkErr(t, err, engine.ErrFenced, "")
		h.sameDump(before, "a write below a row's epoch")
		// Rows not yet written at a higher epoch still take it.
		h.apply(engine.Batch{Fence: engine.Fence{Key: "k2", Epoch: lo}, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p1, Revision: h.row(p1).Revision, Owner: "A", Incarnation: inc}}})
		if r := h.row(p1); r.Epoch != lo {
			t.Fatalf("row epoch %d, want %d", r.Epoch, lo)
		}
	})

	t.Run("dead-after boundary", func(t *testing.T) {
		h := newHarness(t, newStore)
		if !h.c.Manual() {
			t.Skip("exact boundaries need a manual clock")
		}
		epoch := h.acquire("coord", "c", long).Lease.Epoch
		inc := h.register("A", 1)
		h.c.Advance(short)
		b := engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: epoch}, DeadAfter: short, Dead: []engine.DeadNode{{ID: "A", Incarnation: inc}}}
		_, err := h.s.Apply(h.ctx, b)
		checkErr(t, err, engine.ErrConflict, "") // age == dead_after is not older than it
		h.c.Advance(time.Nanosecond)
		h.apply(b)
	})

	t.Run("fencing across tenures", func(t *testing.T) {
		h := newHarness(t, newStore)
		inc := h.register("A", 1)
		h.putTaskList("d", "t", 2)
		p0, p1 := pid("d", "t", 0), pid("d", "t", 1)
		rev0 := h.row(p0).Revision
		// Only the apply must fit in the short ttl (on a real-time backend, too).
		l1 := h.acquire("coord", "c1", short).Lease
		h.apply(engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: l1.Epoch}, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p0, Revision: rev0, Owner: "A", Incarnation: inc}}})
		if r := h.row(p0); r.Epoch != l1.Epoch {
			t.Fatalf("row epoch %d, want the writer's %d", r.Epoch, l1.Epoch)
		}
		// c1's lease runs out: its writes are fenced even though nobody took over.
		h.c.Advance(wait)
		before := h.dump()
		_, err := h.s.Apply(h.ctx, engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: l1.Epoch}, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p1, Revision: h.row(p1).Revision, Owner: "A", Incarnation: inc}}})
		checkErr(t, err, engine.ErrFenced, "")
		h.sameDump(before, "a write with an expired epoch")
		// c2 takes over: its epoch works, c1's does not, whoever asks.
		l2 := h.acquire("coord", "c2", long).Lease
		_, err = h.s.Apply(h.ctx, engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: l1.Epoch}})
		checkErr(t, err, engine.ErrFenced, "")
		h.apply(engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: l2.Epoch}, Changes: []engine.Change{{Kind: engine.ChangeRelease, Partition: p0, Revision: h.row(p0).Revision}}})
		if r := h.row(p0); r.Epoch != l2.Epoch || r.State != engine.Releasing {
			t.Fatalf("row after c2's write: %+v", r)
		}
		// An ack (unfenced) keeps the epoch of the last fenced write.
		_, err = h.s.AckRelease(h.ctx, engine.Ack{Partition: p0, Node: "A", Incarnation: inc, Generation: 1})
		h.must(err, "AckRelease")
		if r := h.row(p0); r.Epoch != l2.Epoch {
			t.Fatalf("ack changed the row's epoch: %+v", r)
		}
		// After c2 releases the lease its epoch is dead too.
		h.release("coord", "c2", l2.Epoch)
		_, err = h.s.Apply(h.ctx, engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: l2.Epoch}})
		checkErr(t, err, engine.ErrFenced, "")
	})
}

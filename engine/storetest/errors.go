package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/helixcoord/helix/engine"
)

// fixture is a small cluster every error case starts from:
//
//	lease "coord": held by c1 at epoch 2 (c0 held epoch 1 and released it); long ttl
//	lease "spare": released by x at epoch 1
//	nodes: A at incarnation 2 (1 was replaced), B at 1, C at 1 deregistered (dead)
//	task list d/t with 5 partitions:
//	  t0 Assigned A   t1 Releasing A→B   t2 Unassigned   t3 Assigned B   t4 Assigned C (dead)
//	task list d/gone, deleted, its partition g0 still Unassigned
type fixture struct {
	*harness
	epoch            uint64
	incA, incB, incC uint64
	t0, t1, t2, t3   engine.PartitionID
	t4, g0           engine.PartitionID
}

func newFixture(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) *fixture {
	t.Helper()
	h := newHarness(t, newStore)
	f := &fixture{harness: h}
	l := h.acquire("coord", "c0", long)
	h.release("coord", "c0", l.Lease.Epoch)
	f.epoch = h.acquire("coord", "c1", long).Lease.Epoch
	l = h.acquire("spare", "x", long)
	h.release("spare", "x", l.Lease.Epoch)

	h.register("A", 1)
	f.incA = h.register("A", 2, engine.Label{Key: "zone", Value: "a"})
	f.incB = h.register("B", 1)
	f.incC = h.register("C", 1)

	h.putTaskList("d", "t", 5)
	h.putTaskList("d", "gone", 1)
	f.t0, f.t1, f.t2, f.t3, f.t4 = pid("d", "t", 0), pid("d", "t", 1), pid("d", "t", 2), pid("d", "t", 3), pid("d", "t", 4)
	f.g0 = pid("d", "gone", 0)
	if _, err := h.s.DeleteTaskList(h.ctx, "d", "gone"); err != nil {
		t.Fatalf("DeleteTaskList: %v", err)
	}
	assign := func(p engine.PartitionID, owner string, inc uint64) engine.Change {
		return engine.Change{Kind: engine.ChangeAssign, Partition: p, Revision: h.row(p).Revision, Owner: owner, Incarnation: inc}
	}
	h.apply(engine.Batch{Fence: f.fence(), Changes: []engine.Change{
		assign(f.t0, "A", f.incA), assign(f.t1, "A", f.incA), assign(f.t3, "B", f.incB), assign(f.t4, "C", f.incC),
	}})
	h.apply(engine.Batch{Fence: f.fence(), Changes: []engine.Change{
		{Kind: engine.ChangeRelease, Partition: f.t1, Revision: h.row(f.t1).Revision, Target: "B"},
	}})
	if _, err := h.s.DeregisterNode(h.ctx, "C", f.incC); err != nil {
		t.Fatalf("DeregisterNode: %v", err)
	}
	return f
}

func (f *fixture) fence() engine.Fence { return engine.Fence{Key: "coord", Epoch: f.epoch} }

func (f *fixture) rev(p engine.PartitionID) uint64 { return f.row(p).Revision }

func (f *fixture) batch(cs ...engine.Change) engine.Batch {
	return engine.Batch{Fence: f.fence(), Changes: cs}
}

// errCase is one refused call: it must fail with want (and name field, for validation
// errors) and leave the store exactly as it was.
type errCase struct {
	name  string
	call  func(ctx context.Context, f *fixture) error
	want  error
	field string
}

func testErrors(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) {
	long129 := strings.Repeat("x", engine.MaxNameBytes+1)
	cases := []errCase{
		// ---- leases ----
		{"acquire held by another", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AcquireLease(ctx, "coord", "c2", long)
			return err
		}, engine.ErrLeaseHeld, ""},
		{"renew by another owner", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RenewLease(ctx, "coord", "c2", f.epoch, long)
			return err
		}, engine.ErrLeaseLost, ""},
		{"renew with an older epoch", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RenewLease(ctx, "coord", "c1", f.epoch-1, long)
			return err
		}, engine.ErrLeaseLost, ""},
		{"renew with a future epoch", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RenewLease(ctx, "coord", "c1", f.epoch+1, long)
			return err
		}, engine.ErrLeaseLost, ""},
		{"renew a released lease", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RenewLease(ctx, "spare", "x", 1, long)
			return err
		}, engine.ErrLeaseLost, ""},
		{"renew a lease that never existed", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RenewLease(ctx, "k1", "c1", 1, long)
			return err
		}, engine.ErrLeaseLost, ""},
		{"release by another owner", func(ctx context.Context, f *fixture) error {
			_, err := f.s.ReleaseLease(ctx, "coord", "c2", f.epoch)
			return err
		}, engine.ErrLeaseLost, ""},
		{"release with an older epoch", func(ctx context.Context, f *fixture) error {
			_, err := f.s.ReleaseLease(ctx, "coord", "c0", f.epoch-1)
			return err
		}, engine.ErrLeaseLost, ""},
		{"release a released lease", func(ctx context.Context, f *fixture) error {
			_, err := f.s.ReleaseLease(ctx, "spare", "x", 1)
			return err
		}, engine.ErrLeaseLost, ""},
		{"release a lease that never existed", func(ctx context.Context, f *fixture) error {
			_, err := f.s.ReleaseLease(ctx, "k1", "c1", 1)
			return err
		}, engine.ErrLeaseLost, ""},
		{"read a lease that never existed", func(ctx context.Context, f *fixture) error {
			_, err := f.s.ReadLease(ctx, "k1")
			return err
		}, engine.ErrNotFound, ""},
		{"acquire: empty key", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AcquireLease(ctx, "", "c1", long)
			return err
		}, engine.ErrInvalid, "lease.key"},
		{"acquire: key too long", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AcquireLease(ctx, long129, "c1", long)
			return err
		}, engine.ErrInvalid, "lease.key"},
		{"acquire: control character in owner", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AcquireLease(ctx, "k1", "c\n1", long)
			return err
		}, engine.ErrInvalid, "lease.owner"},
		{"acquire: invalid UTF-8 owner", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AcquireLease(ctx, "k1", "c\xff", long)
			return err
		}, engine.ErrInvalid, "lease.owner"},
		{"acquire: zero ttl", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AcquireLease(ctx, "k1", "c1", 0)
			return err
		}, engine.ErrInvalid, "lease.ttl"},
		{"acquire: negative ttl", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AcquireLease(ctx, "coord", "c1", -long)
			return err
		}, engine.ErrInvalid, "lease.ttl"},
		{"renew: zero epoch", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RenewLease(ctx, "coord", "c1", 0, long)
			return err
		}, engine.ErrInvalid, "lease.epoch"},
		{"renew: zero ttl", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RenewLease(ctx, "coord", "c1", f.epoch, 0)
			return err
		}, engine.ErrInvalid, "lease.ttl"},
		{"release: zero epoch", func(ctx context.Context, f *fixture) error {
			_, err := f.s.ReleaseLease(ctx, "coord", "c1", 0)
			return err
		}, engine.ErrInvalid, "lease.epoch"},
		{"release: empty owner", func(ctx context.Context, f *fixture) error {
			_, err := f.s.ReleaseLease(ctx, "coord", "", f.epoch)
			return err
		}, engine.ErrInvalid, "lease.owner"},
		{"read: empty key", func(ctx context.Context, f *fixture) error {
			_, err := f.s.ReadLease(ctx, "")
			return err
		}, engine.ErrInvalid, "lease.key"},

		// ---- nodes ----
		{"heartbeat: unknown node", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Heartbeat(ctx, "Z", 1, 0)
			return err
		}, engine.ErrNodeDead, ""},
		{"heartbeat: replaced incarnation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Heartbeat(ctx, "A", f.incA-1, 0)
			return err
		}, engine.ErrNodeDead, ""},
		{"heartbeat: incarnation never issued", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Heartbeat(ctx, "A", f.incA+1, 0)
			return err
		}, engine.ErrNodeDead, ""},
		{"heartbeat: deregistered", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Heartbeat(ctx, "C", f.incC, 0)
			return err
		}, engine.ErrNodeDead, ""},
		{"deregister: unknown node", func(ctx context.Context, f *fixture) error {
			_, err := f.s.DeregisterNode(ctx, "Z", 1)
			return err
		}, engine.ErrNotFound, ""},
		{"deregister: incarnation never issued", func(ctx context.Context, f *fixture) error {
			_, err := f.s.DeregisterNode(ctx, "B", f.incB+1)
			return err
		}, engine.ErrNotFound, ""},
		{"update: unknown node", func(ctx context.Context, f *fixture) error {
			d := true
			_, err := f.s.UpdateNode(ctx, "Z", engine.NodeUpdate{Draining: &d})
			return err
		}, engine.ErrNotFound, ""},
		{"register: empty id", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RegisterNode(ctx, engine.NodeSpec{ID: "", Capacity: 1})
			return err
		}, engine.ErrInvalid, "node.id"},
		{"register: zero capacity", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RegisterNode(ctx, engine.NodeSpec{ID: "A", Capacity: 0})
			return err
		}, engine.ErrInvalid, "node.capacity"},
		{"register: unsorted labels", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RegisterNode(ctx, engine.NodeSpec{ID: "A", Capacity: 1, Labels: []engine.Label{{Key: "b"}, {Key: "a"}}})
			return err
		}, engine.ErrInvalid, "node.labels"},
		{"register: empty label key", func(ctx context.Context, f *fixture) error {
			_, err := f.s.RegisterNode(ctx, engine.NodeSpec{ID: "A", Capacity: 1, Labels: []engine.Label{{Key: ""}}})
			return err
		}, engine.ErrInvalid, "node.labels.key"},
		{"register: replace without a process", func(ctx context.Context, f *fixture) error {
			// A takeover that names nobody could record no replacer: the holder's
			// heartbeats would go on being accepted.
			_, err := f.s.RegisterNode(ctx, engine.NodeSpec{ID: "A", Capacity: 1, DeadAfter: long, Replace: true})
			return err
		}, engine.ErrInvalid, "node.replace"},
		{"heartbeat: zero incarnation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Heartbeat(ctx, "A", 0, 0)
			return err
		}, engine.ErrInvalid, "node.incarnation"},
		{"heartbeat: id too long", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Heartbeat(ctx, long129, 1, 0)
			return err
		}, engine.ErrInvalid, "node.id"},
		{"deregister: zero incarnation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.DeregisterNode(ctx, "A", 0)
			return err
		}, engine.ErrInvalid, "node.incarnation"},
		{"update: zero capacity", func(ctx context.Context, f *fixture) error {
			c := 0
			_, err := f.s.UpdateNode(ctx, "A", engine.NodeUpdate{Capacity: &c})
			return err
		}, engine.ErrInvalid, "node.capacity"},
		{"update: duplicate label keys", func(ctx context.Context, f *fixture) error {
			l := []engine.Label{{Key: "a"}, {Key: "a"}}
			_, err := f.s.UpdateNode(ctx, "A", engine.NodeUpdate{Labels: &l})
			return err
		}, engine.ErrInvalid, "node.labels"},

		// ---- task lists ----
		{"delete: unknown task list", func(ctx context.Context, f *fixture) error {
			_, err := f.s.DeleteTaskList(ctx, "d", "gone")
			return err
		}, engine.ErrNotFound, ""},
		{"put: zero partitions", func(ctx context.Context, f *fixture) error {
			_, err := f.s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 0})
			return err
		}, engine.ErrInvalid, "tasklist.partitions"},
		{"put: too many partitions", func(ctx context.Context, f *fixture) error {
			_, err := f.s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: engine.MaxPartitions + 1})
			return err
		}, engine.ErrInvalid, "tasklist.partitions"},
		{"put: empty domain", func(ctx context.Context, f *fixture) error {
			_, err := f.s.PutTaskList(ctx, engine.TaskList{Domain: "", Name: "t", Partitions: 1})
			return err
		}, engine.ErrInvalid, "tasklist.domain"},
		{"put: control character in name", func(ctx context.Context, f *fixture) error {
			_, err := f.s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t\x00", Partitions: 1})
			return err
		}, engine.ErrInvalid, "tasklist.name"},
		{"delete: empty name", func(ctx context.Context, f *fixture) error {
			_, err := f.s.DeleteTaskList(ctx, "d", "")
			return err
		}, engine.ErrInvalid, "tasklist.name"},

		// ---- apply: fencing ----
		{"apply: older epoch", func(ctx context.Context, f *fixture) error {
			b := f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t2, Revision: f.rev(f.t2), Owner: "B", Incarnation: f.incB})
			b.Fence.Epoch--
			_, err := f.s.Apply(ctx, b)
			return err
		}, engine.ErrFenced, ""},
		{"apply: future epoch", func(ctx context.Context, f *fixture) error {
			b := f.batch()
			b.Fence.Epoch++
			_, err := f.s.Apply(ctx, b)
			return err
		}, engine.ErrFenced, ""},
		{"apply: fence on a lease that never existed", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "k1", Epoch: 1}})
			return err
		}, engine.ErrFenced, ""},
		{"apply: fence on a released lease", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "spare", Epoch: 1}})
			return err
		}, engine.ErrFenced, ""},
		{"apply: fenced beats conflict", func(ctx context.Context, f *fixture) error {
			b := f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t2, Revision: f.rev(f.t2) + 100, Owner: "B", Incarnation: f.incB})
			b.Fence.Epoch--
			_, err := f.s.Apply(ctx, b)
			return err
		}, engine.ErrFenced, ""},

		// ---- apply: preconditions ----
		{"apply: stale row revision", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t2, Revision: f.rev(f.t2) - 1, Owner: "B", Incarnation: f.incB}))
			return err
		}, engine.ErrConflict, ""},
		{"apply: no such row", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: pid("d", "none", 0), Revision: 1, Owner: "B", Incarnation: f.incB}))
			return err
		}, engine.ErrConflict, ""},
		{"assign: row owned by a live node", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t0, Revision: f.rev(f.t0), Owner: "B", Incarnation: f.incB}))
			return err
		}, engine.ErrConflict, ""},
		{"assign: releasing row whose owner is alive", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t1, Revision: f.rev(f.t1), Owner: "B", Incarnation: f.incB}))
			return err
		}, engine.ErrConflict, ""},
		{"assign: to a dead node", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t2, Revision: f.rev(f.t2), Owner: "C", Incarnation: f.incC}))
			return err
		}, engine.ErrConflict, ""},
		{"assign: to a replaced incarnation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t2, Revision: f.rev(f.t2), Owner: "A", Incarnation: f.incA - 1}))
			return err
		}, engine.ErrConflict, ""},
		{"assign: to an unknown node", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t2, Revision: f.rev(f.t2), Owner: "Z", Incarnation: 1}))
			return err
		}, engine.ErrConflict, ""},
		{"assign: partition no longer configured", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.g0, Revision: f.rev(f.g0), Owner: "B", Incarnation: f.incB}))
			return err
		}, engine.ErrConflict, ""},
		{"release: unassigned row", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeRelease, Partition: f.t2, Revision: f.rev(f.t2), Target: "B"}))
			return err
		}, engine.ErrConflict, ""},
		{"release: already releasing", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeRelease, Partition: f.t1, Revision: f.rev(f.t1), Target: "A"}))
			return err
		}, engine.ErrConflict, ""},
		{"release: owner dead", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeRelease, Partition: f.t4, Revision: f.rev(f.t4), Target: "B"}))
			return err
		}, engine.ErrConflict, ""},
		{"unassign: owner alive", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeUnassign, Partition: f.t0, Revision: f.rev(f.t0)}))
			return err
		}, engine.ErrConflict, ""},
		{"unassign: releasing, owner alive", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeUnassign, Partition: f.t1, Revision: f.rev(f.t1)}))
			return err
		}, engine.ErrConflict, ""},
		{"unassign: already unassigned", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeUnassign, Partition: f.t2, Revision: f.rev(f.t2)}))
			return err
		}, engine.ErrConflict, ""},
		{"delete: partition still configured", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeDelete, Partition: f.t2, Revision: f.rev(f.t2)}))
			return err
		}, engine.ErrConflict, ""},
		{"delete: owner alive", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeDelete, Partition: f.t0, Revision: f.rev(f.t0)}))
			return err
		}, engine.ErrConflict, ""},
		{"all or nothing: a good change then a bad one", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(
				engine.Change{Kind: engine.ChangeAssign, Partition: f.t2, Revision: f.rev(f.t2), Owner: "B", Incarnation: f.incB},
				engine.Change{Kind: engine.ChangeUnassign, Partition: f.t4, Revision: f.rev(f.t4)},
				engine.Change{Kind: engine.ChangeDelete, Partition: f.g0, Revision: f.rev(f.g0)},
				engine.Change{Kind: engine.ChangeUnassign, Partition: f.t0, Revision: f.rev(f.t0)},
			))
			return err
		}, engine.ErrConflict, ""},
		{"dead: heartbeat too recent", func(ctx context.Context, f *fixture) error {
			b := f.batch(engine.Change{Kind: engine.ChangeUnassign, Partition: f.t4, Revision: f.rev(f.t4)})
			b.Dead, b.DeadAfter = []engine.DeadNode{{ID: "A", Incarnation: f.incA}}, long
			_, err := f.s.Apply(ctx, b)
			return err
		}, engine.ErrConflict, ""},
		{"dead: unknown node", func(ctx context.Context, f *fixture) error {
			b := f.batch()
			b.Dead, b.DeadAfter = []engine.DeadNode{{ID: "Z", Incarnation: 1}}, short
			_, err := f.s.Apply(ctx, b)
			return err
		}, engine.ErrConflict, ""},
		{"dead: incarnation never issued", func(ctx context.Context, f *fixture) error {
			b := f.batch()
			b.Dead, b.DeadAfter = []engine.DeadNode{{ID: "B", Incarnation: f.incB + 1}}, short
			_, err := f.s.Apply(ctx, b)
			return err
		}, engine.ErrConflict, ""},

		// ---- apply: validation ----
		{"apply: empty fence key", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "", Epoch: f.epoch}})
			return err
		}, engine.ErrInvalid, "batch.fence.key"},
		{"apply: zero epoch", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: 0}})
			return err
		}, engine.ErrInvalid, "batch.fence.epoch"},
		{"apply: dead nodes without dead_after", func(ctx context.Context, f *fixture) error {
			b := f.batch()
			b.Dead = []engine.DeadNode{{ID: "A", Incarnation: f.incA}}
			_, err := f.s.Apply(ctx, b)
			return err
		}, engine.ErrInvalid, "batch.dead_after"},
		{"apply: dead node with zero incarnation", func(ctx context.Context, f *fixture) error {
			b := f.batch()
			b.Dead, b.DeadAfter = []engine.DeadNode{{ID: "A", Incarnation: 0}}, short
			_, err := f.s.Apply(ctx, b)
			return err
		}, engine.ErrInvalid, "batch.dead[0].incarnation"},
		{"apply: partition twice", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(
				engine.Change{Kind: engine.ChangeUnassign, Partition: f.t4, Revision: f.rev(f.t4)},
				engine.Change{Kind: engine.ChangeAssign, Partition: f.t4, Revision: f.rev(f.t4), Owner: "B", Incarnation: f.incB}))
			return err
		}, engine.ErrInvalid, "batch.changes[1].partition"},
		{"apply: unknown change kind", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: 0, Partition: f.t2, Revision: f.rev(f.t2)}))
			return err
		}, engine.ErrInvalid, "batch.changes[0].kind"},
		{"apply: assign without owner", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t2, Revision: f.rev(f.t2), Incarnation: 1}))
			return err
		}, engine.ErrInvalid, "batch.changes[0].owner"},
		{"apply: assign without incarnation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t2, Revision: f.rev(f.t2), Owner: "B"}))
			return err
		}, engine.ErrInvalid, "batch.changes[0].incarnation"},
		{"apply: negative partition", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeUnassign, Partition: pid("d", "t", -1), Revision: 1}))
			return err
		}, engine.ErrInvalid, "batch.changes[0].partition.partition"},
		{"apply: partition beyond the limit", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeUnassign, Partition: pid("d", "t", engine.MaxPartitions), Revision: 1}))
			return err
		}, engine.ErrInvalid, "batch.changes[0].partition.partition"},
		{"apply: empty domain", func(ctx context.Context, f *fixture) error {
			_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeUnassign, Partition: pid("", "t", 0), Revision: 1}))
			return err
		}, engine.ErrInvalid, "batch.changes[0].partition.domain"},

		// ---- give-backs ----
		{"give back: dead node", func(ctx context.Context, f *fixture) error {
			_, err := f.s.GiveBack(ctx, engine.Ack{Partition: f.t4, Node: "C", Incarnation: f.incC, Generation: f.row(f.t4).Generation})
			return err
		}, engine.ErrNodeDead, ""},
		{"give back: replaced incarnation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.GiveBack(ctx, engine.Ack{Partition: f.t0, Node: "A", Incarnation: f.incA - 1, Generation: f.row(f.t0).Generation})
			return err
		}, engine.ErrNodeDead, ""},
		{"give back: no such row", func(ctx context.Context, f *fixture) error {
			_, err := f.s.GiveBack(ctx, engine.Ack{Partition: pid("d", "none", 0), Node: "A", Incarnation: f.incA, Generation: 1})
			return err
		}, engine.ErrNotFound, ""},
		{"give back: row releasing", func(ctx context.Context, f *fixture) error {
			_, err := f.s.GiveBack(ctx, engine.Ack{Partition: f.t1, Node: "A", Incarnation: f.incA, Generation: f.row(f.t1).Generation})
			return err
		}, engine.ErrConflict, ""},
		{"give back: row unassigned", func(ctx context.Context, f *fixture) error {
			_, err := f.s.GiveBack(ctx, engine.Ack{Partition: f.t2, Node: "A", Incarnation: f.incA, Generation: f.row(f.t2).Generation})
			return err
		}, engine.ErrConflict, ""},
		{"give back: wrong generation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.GiveBack(ctx, engine.Ack{Partition: f.t0, Node: "A", Incarnation: f.incA, Generation: f.row(f.t0).Generation + 1})
			return err
		}, engine.ErrConflict, ""},
		{"give back: by a live node that is not the owner", func(ctx context.Context, f *fixture) error {
			_, err := f.s.GiveBack(ctx, engine.Ack{Partition: f.t0, Node: "B", Incarnation: f.incB, Generation: f.row(f.t0).Generation})
			return err
		}, engine.ErrConflict, ""},
		{"give back: zero incarnation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.GiveBack(ctx, engine.Ack{Partition: f.t0, Node: "A", Incarnation: 0, Generation: 1})
			return err
		}, engine.ErrInvalid, "give_back.incarnation"},
		{"give back: empty node", func(ctx context.Context, f *fixture) error {
			_, err := f.s.GiveBack(ctx, engine.Ack{Partition: f.t0, Node: "", Incarnation: 1, Generation: 1})
			return err
		}, engine.ErrInvalid, "give_back.node"},

		// ---- release acknowledgements ----
		{"ack: dead node", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AckRelease(ctx, engine.Ack{Partition: f.t4, Node: "C", Incarnation: f.incC, Generation: f.row(f.t4).Generation})
			return err
		}, engine.ErrNodeDead, ""},
		{"ack: replaced incarnation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AckRelease(ctx, engine.Ack{Partition: f.t1, Node: "A", Incarnation: f.incA - 1, Generation: f.row(f.t1).Generation})
			return err
		}, engine.ErrNodeDead, ""},
		{"ack: unknown node", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AckRelease(ctx, engine.Ack{Partition: f.t1, Node: "Z", Incarnation: 1, Generation: 1})
			return err
		}, engine.ErrNodeDead, ""},
		{"ack: row not releasing", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AckRelease(ctx, engine.Ack{Partition: f.t0, Node: "A", Incarnation: f.incA, Generation: f.row(f.t0).Generation})
			return err
		}, engine.ErrConflict, ""},
		{"ack: wrong generation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AckRelease(ctx, engine.Ack{Partition: f.t1, Node: "A", Incarnation: f.incA, Generation: f.row(f.t1).Generation + 1})
			return err
		}, engine.ErrConflict, ""},
		{"ack: by a live node that is not the owner", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AckRelease(ctx, engine.Ack{Partition: f.t1, Node: "B", Incarnation: f.incB, Generation: f.row(f.t1).Generation})
			return err
		}, engine.ErrConflict, ""},
		{"ack: no such row", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AckRelease(ctx, engine.Ack{Partition: pid("d", "none", 0), Node: "A", Incarnation: f.incA, Generation: 1})
			return err
		}, engine.ErrNotFound, ""},
		{"ack: zero incarnation", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AckRelease(ctx, engine.Ack{Partition: f.t1, Node: "A", Incarnation: 0, Generation: 1})
			return err
		}, engine.ErrInvalid, "ack.incarnation"},
		{"ack: empty node", func(ctx context.Context, f *fixture) error {
			_, err := f.s.AckRelease(ctx, engine.Ack{Partition: f.t1, Node: "", Incarnation: 1, Generation: 1})
			return err
		}, engine.ErrInvalid, "ack.node"},
	}

	// One fixture per case keeps cases independent; the fixture costs a dozen calls.
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, newStore)
			before := f.dump()
			err := c.call(f.ctx, f)
			checkErr(t, err, c.want, c.field)
			f.sameDump(before, c.name)
		})
	}

	t.Run("cancelled context", func(t *testing.T) {
		f := newFixture(t, newStore)
		before := f.dump()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		calls := map[string]func() error{
			"acquire":  func() error { _, err := f.s.AcquireLease(ctx, "k1", "c1", long); return err },
			"register": func() error { _, err := f.s.RegisterNode(ctx, engine.NodeSpec{ID: "N", Capacity: 1}); return err },
			"put": func() error {
				_, err := f.s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "n", Partitions: 1})
				return err
			},
			"apply": func() error {
				_, err := f.s.Apply(ctx, f.batch(engine.Change{Kind: engine.ChangeUnassign, Partition: f.t4, Revision: f.rev(f.t4)}))
				return err
			},
		}
		for _, name := range []string{"acquire", "register", "put", "apply"} {
			if err := calls[name](); err == nil {
				t.Errorf("%s with a cancelled context succeeded", name)
			} else if !errors.Is(err, engine.ErrUnavailable) && !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: %v, want ErrUnavailable or context.Canceled", name, err)
			}
		}
		f.sameDump(before, "calls with a cancelled context")
	})
}

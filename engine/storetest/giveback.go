package storetest

import (
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// testGiveBack: a worker hands back an Assigned row; the row turns Unassigned with the
// giver and the store time recorded, the revisions move like an acknowledgement's, a
// repeat conflicts, and later writes keep the record.
func testGiveBack(t *testing.T, newStore func(t *testing.T) (engine.Store, Clock)) {
	f := newFixture(t, newStore)
	before := f.row(f.t0)
	hbBefore := f.heartbeat("A", f.incA, 0)
	r, err := f.s.GiveBack(f.ctx, engine.Ack{Partition: f.t0, Node: "A", Incarnation: f.incA, Generation: before.Generation})
	if err != nil {
		t.Fatalf("GiveBack: %v", err)
	}
	after := f.row(f.t0)
	if after.State != engine.Unassigned || after.Owner != "" || after.Incarnation != 0 || after.Target != "" {
		t.Fatalf("row after give-back: %+v, want unassigned without owner or target", after)
	}
	if after.Generation != before.Generation || after.Epoch != before.Epoch {
		t.Fatalf("give-back changed generation/epoch: %d/%d → %d/%d", before.Generation, before.Epoch, after.Generation, after.Epoch)
	}
	if after.Revision <= before.Revision {
		t.Fatalf("give-back did not move the row's revision: %d → %d", before.Revision, after.Revision)
	}
	if after.GivenBackBy != "A" || !approx(after.GivenBackAt.Sub(r.Now), 0, time.Millisecond) {
		t.Fatalf("given back by %q at %v, want A at the reply's store time %v", after.GivenBackBy, after.GivenBackAt, r.Now)
	}
	// The giver's heartbeat learns that its list changed, and the row is gone from it.
	hb := f.heartbeat("A", f.incA, hbBefore.AssignRevision)
	if !hb.Changed {
		t.Fatalf("heartbeat after a give-back: not changed (revision %d)", hb.AssignRevision)
	}
	for _, a := range hb.Assignments {
		if a.Partition == f.t0 {
			t.Fatalf("the given-back row is still in the giver's list: %+v", a)
		}
	}
	// A repeat (say, after a lost reply) conflicts and changes nothing.
	d := f.dump()
	_, err = f.s.GiveBack(f.ctx, engine.Ack{Partition: f.t0, Node: "A", Incarnation: f.incA, Generation: before.Generation})
	checkErr(t, err, engine.ErrConflict, "")
	f.sameDump(d, "a repeated give-back")
	// Assigning it elsewhere keeps the record (the coordinator's cool-down reads it).
	f.apply(f.batch(engine.Change{Kind: engine.ChangeAssign, Partition: f.t0, Revision: after.Revision, Owner: "B", Incarnation: f.incB}))
	moved := f.row(f.t0)
	if moved.Owner != "B" || moved.Generation != before.Generation+1 || moved.GivenBackBy != "A" || !moved.GivenBackAt.Equal(after.GivenBackAt) {
		t.Fatalf("row after re-assignment: %+v, want owner B, generation %d, given back by A at %v", moved, before.Generation+1, after.GivenBackAt)
	}
	st, err := f.s.ReadState(f.ctx, 0)
	if err != nil {
		t.Fatalf("ReadState: %v", err)
	}
	for _, a := range st.Assignments {
		if a.Partition == f.t0 && (a.GivenBackBy != "A" || !a.GivenBackAt.Equal(after.GivenBackAt)) {
			t.Fatalf("ReadState row %+v: give-back record lost", a)
		}
	}
}

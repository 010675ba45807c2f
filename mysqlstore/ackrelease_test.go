package mysqlstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
)

// AckRelease writes the row, the revision and both nodes in one multi-table UPDATE: the
// row is released, and the cluster revision and each node's assign_rev grow by exactly one.
func TestAckReleaseBumpsEachRowOnce(t *testing.T) {
	dsn := migratedDSN(t)
	ctx := context.Background()
	s := openStore(t, dsn, "default")
	if _, err := s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	w1, err := s.RegisterNode(ctx, engine.NodeSpec{ID: "w1", Capacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterNode(ctx, engine.NodeSpec{ID: "w2", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	l, err := s.AcquireLease(ctx, "coordinator", "c", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	p := engine.PartitionID{Domain: "d", TaskList: "t", Partition: 0}
	fence := engine.Fence{Key: "coordinator", Epoch: l.Lease.Epoch}
	row := func() engine.Assignment {
		t.Helper()
		st, err := s.ReadState(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range st.Assignments {
			if a.Partition == p {
				return a
			}
		}
		t.Fatal("no row")
		return engine.Assignment{}
	}
	if _, err := s.Apply(ctx, engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeAssign, Partition: p, Revision: row().Revision, Owner: "w1", Incarnation: w1.Incarnation}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, engine.Batch{Fence: fence, Changes: []engine.Change{{Kind: engine.ChangeRelease, Partition: p, Revision: row().Revision, Target: "w2"}}}); err != nil {
		t.Fatal(err)
	}
	revs := func() (w1Rev, w2Rev, clusterRev uint64) {
		t.Helper()
		db := s.DB()
		if err := db.QueryRow("SELECT assign_rev FROM helix_nodes WHERE cluster = 'default' AND id = 'w1'").Scan(&w1Rev); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow("SELECT assign_rev FROM helix_nodes WHERE cluster = 'default' AND id = 'w2'").Scan(&w2Rev); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow("SELECT revision FROM helix_revision WHERE cluster = 'default'").Scan(&clusterRev); err != nil {
			t.Fatal(err)
		}
		return
	}
	a1, a2, ar := revs()
	if _, err := s.AckRelease(ctx, engine.Ack{Partition: p, Node: "w1", Incarnation: w1.Incarnation, Generation: row().Generation}); err != nil {
		t.Fatal(err)
	}
	b1, b2, br := revs()
	if b1 != a1+1 || b2 != a2+1 || br != ar+1 {
		t.Fatalf("after the ack: w1 assign_rev %d→%d, w2 %d→%d, cluster revision %d→%d; want each +1", a1, b1, a2, b2, ar, br)
	}
	r := row()
	if r.State != engine.Unassigned || r.Owner != "" || r.Revision != br || r.Target != "w2" {
		t.Fatalf("row after the ack: %+v; want unassigned, no owner, on its way to w2, at revision %d", r, br)
	}
}

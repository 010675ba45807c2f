package mysqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
	"github.com/helixcoord/helix/mysqlstore/mysqltest"
)

func TestOpenErrorHidesPassword(t *testing.T) {
	cfg, err := mysql.ParseDSN(mysqltest.ServerDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Passwd, cfg.DBName = "helix_nobody", "Sup3r-Secret-Pw", "helix"
	_, err = mysqlstore.Open(context.Background(), cfg.FormatDSN(), mysqlstore.Options{})
	if err == nil {
		t.Fatal("Open with a wrong user succeeded")
	}
	if strings.Contains(err.Error(), "Sup3r-Secret-Pw") {
		t.Fatalf("the password leaked into the error: %v", err)
	}
	if !strings.Contains(err.Error(), "helix_nobody@tcp(") {
		t.Fatalf("error %q does not name the server it tried", err)
	}
}

// TestClustersAreIsolated: two clusters in one database share nothing.
func TestClustersAreIsolated(t *testing.T) {
	dsn := migratedDSN(t)
	ctx := context.Background()
	a, b := openStore(t, dsn, "a"), openStore(t, dsn, "b")
	if _, err := a.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RegisterNode(ctx, engine.NodeSpec{ID: "n", Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	la, err := a.AcquireLease(ctx, "coordinator", "x", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.AcquireLease(ctx, "coordinator", "y", time.Minute)
	if err != nil || la.Lease.Epoch != 1 || lb.Lease.Epoch != 1 {
		t.Fatalf("each cluster has its own lease: %v %v %v", la.Lease, lb.Lease, err)
	}
	st, err := b.ReadState(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes)+len(st.TaskLists)+len(st.Assignments) != 0 || st.Revision != 0 {
		t.Fatalf("cluster b sees cluster a's rows: %+v", st)
	}
	if _, err := mysqlstore.New(a.DB(), mysqlstore.Options{Cluster: "bad\x01name"}); !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("New with a bad cluster name: %v, want a validation error", err)
	}
}

// TestLargeBatch exercises the chunked multi-row statements (more rows than one
// statement carries, across task lists) and the tombstone round trip on a real server.
func TestLargeBatch(t *testing.T) {
	dsn := migratedDSN(t)
	ctx := context.Background()
	s := openStore(t, dsn, "default")
	for _, tl := range []string{"a", "b", "c"} {
		if _, err := s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: tl, Partitions: 600}); err != nil {
			t.Fatal(err)
		}
	}
	var incs []uint64
	for i := range 3 {
		r, err := s.RegisterNode(ctx, engine.NodeSpec{ID: fmt.Sprintf("w%d", i), Capacity: 1, Labels: []engine.Label{{Key: "zone", Value: "\xff not utf-8"}}})
		if err != nil {
			t.Fatal(err)
		}
		incs = append(incs, r.Incarnation)
	}
	l, err := s.AcquireLease(ctx, "coordinator", "c", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.ReadState(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Assignments) != 1800 || st.Revision != 1800 {
		t.Fatalf("%d rows at revision %d, want 1800 and 1800", len(st.Assignments), st.Revision)
	}
	if got := st.Nodes[0].Labels; len(got) != 1 || got[0].Value != "\xff not utf-8" {
		t.Fatalf("labels did not round-trip: %q", got)
	}
	b := engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: l.Lease.Epoch}}
	for i, r := range st.Assignments {
		b.Changes = append(b.Changes, engine.Change{Kind: engine.ChangeAssign, Partition: r.Partition, Revision: r.Revision, Owner: fmt.Sprintf("w%d", i%3), Incarnation: incs[i%3]})
	}
	ar, err := s.Apply(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if ar.Revision != 3600 {
		t.Fatalf("revision after assigning 1800 rows: %d, want 3600", ar.Revision)
	}
	rows, err := s.ReadAssignments(ctx, 1800)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rows.Assignments {
		if r.State != engine.Assigned || r.Owner != fmt.Sprintf("w%d", i%3) || r.Generation != 1 || r.Epoch != l.Lease.Epoch || r.Revision != uint64(1801+i) {
			t.Fatalf("row %d after the batch: %+v", i, r)
		}
	}
	hb, err := s.Heartbeat(ctx, "w1", incs[1], 0)
	if err != nil || !hb.Changed || len(hb.Assignments) != 600 {
		t.Fatalf("w1's heartbeat: changed %v, %d rows, %v; want its 600 rows", hb.Changed, len(hb.Assignments), err)
	}
	hb2, err := s.Heartbeat(ctx, "w1", incs[1], hb.AssignRevision)
	if err != nil || hb2.Changed {
		t.Fatalf("steady heartbeat: %+v, %v", hb2, err)
	}
	// The fast path's Now is the local clock corrected by the measured server offset:
	// it must agree with the server's clock read just before and just after.
	before, after := hb.Now, func() time.Time { r, _ := s.ListNodes(ctx); return r.Now }()
	if hb2.Now.Before(before.Add(-50*time.Millisecond)) || hb2.Now.After(after.Add(50*time.Millisecond)) {
		t.Fatalf("fast-path Now %v is outside the server clock's [%v, %v] (±50ms)", hb2.Now, before, after)
	}
	// Shrink c to nothing (delete it), unassign its rows by declaring w0..w2 dead, mark
	// them deleted, then configure it again: tombstones come back Unassigned, generation kept.
	if _, err := s.DeleteTaskList(ctx, "d", "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeregisterNode(ctx, "w0", incs[0]); err != nil {
		t.Fatal(err)
	}
	cur, err := s.ReadAssignments(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	del := engine.Batch{Fence: b.Fence}
	for _, r := range cur.Assignments {
		if r.Partition.TaskList == "c" && r.Owner == "w0" {
			del.Changes = append(del.Changes, engine.Change{Kind: engine.ChangeDelete, Partition: r.Partition, Revision: r.Revision})
		}
	}
	if _, err := s.Apply(ctx, del); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "c", Partitions: 600}); err != nil {
		t.Fatal(err)
	}
	back, err := s.ReadAssignments(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	revived := 0
	for _, r := range back.Assignments {
		if r.Partition.TaskList == "c" && r.State == engine.Unassigned {
			revived++
			if r.Generation != 1 || r.Owner != "" {
				t.Fatalf("revived row %+v: generation must be kept, owner empty", r)
			}
		}
	}
	if revived != len(del.Changes) {
		t.Fatalf("%d rows revived, want %d", revived, len(del.Changes))
	}
}

package memstore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/engine/memstore"
	"github.com/helixcoord/helix/engine/storetest"
)

// start is an arbitrary store time; the suite never compares it with the wall clock.
var start = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newStore(t *testing.T) (engine.Store, storetest.Clock) {
	c := storetest.NewManualClock(start)
	return memstore.New(c.Now), c
}

// TestConformance runs the Store conformance suite against the in-memory store.
func TestConformance(t *testing.T) {
	storetest.Run(t, newStore)
}

// TestConformanceRealTime runs the suite the way a database backend runs it: store time
// is the wall clock and the suite waits instead of advancing a manual clock. It checks the
// suite's real-time mode (tolerances, waits, the model without time steps) here, where it
// costs a second, rather than first on MySQL.
func TestConformanceRealTime(t *testing.T) {
	if testing.Short() {
		t.Skip("waits on the wall clock")
	}
	storetest.Run(t, func(t *testing.T) (engine.Store, storetest.Clock) {
		return memstore.New(time.Now), storetest.RealClock{}
	})
}

var ctx = context.Background()

// must returns v, or panics (failing the test) with err: setup calls that cannot fail.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// cluster sets up a coordinator lease, one node and one task list with partition 0
// assigned to the node.
func cluster(t *testing.T) (*memstore.Store, *storetest.ManualClock, engine.Lease, uint64) {
	t.Helper()
	c := storetest.NewManualClock(start)
	s := memstore.New(c.Now)
	l := must(s.AcquireLease(ctx, "coord", "c1", time.Second)).Lease
	inc := must(s.RegisterNode(ctx, engine.NodeSpec{ID: "A", Capacity: 1})).Incarnation
	must(s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 2}))
	p := engine.PartitionID{Domain: "d", TaskList: "t", Partition: 0}
	must(s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: l.Epoch}, Changes: []engine.Change{
		{Kind: engine.ChangeAssign, Partition: p, Revision: 1, Owner: "A", Incarnation: inc},
	}}))
	return s, c, l, inc
}

// The refusals the simulator's safety rests on (the mutation harness, mutants/, turns
// each into an acceptance and checks that the suite notices).
func TestSafetyRefusals(t *testing.T) {
	t.Run("expired epoch fenced", func(t *testing.T) {
		s, c, l, _ := cluster(t)
		c.Advance(time.Second) // the lease expires at exactly this instant
		b := engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: l.Epoch}}
		if _, err := s.Apply(ctx, b); !errors.Is(err, engine.ErrFenced) {
			t.Fatalf("apply at the lease's expiry: %v, want ErrFenced", err)
		}
	})
	t.Run("dead incarnation's heartbeat refused", func(t *testing.T) {
		s, _, _, inc := cluster(t)
		must(s.DeregisterNode(ctx, "A", inc))
		if _, err := s.Heartbeat(ctx, "A", inc, 0); !errors.Is(err, engine.ErrNodeDead) {
			t.Fatalf("heartbeat of a deregistered incarnation: %v, want ErrNodeDead", err)
		}
		if n := s.Snapshot().Nodes[0]; n.Status != engine.NodeDead {
			t.Fatalf("the refused heartbeat revived the incarnation: %+v", n)
		}
	})
	t.Run("expired lease not renewed", func(t *testing.T) {
		s, c, l, _ := cluster(t)
		c.Advance(time.Second) // the lease expires at exactly this instant
		if _, err := s.RenewLease(ctx, "coord", "c1", l.Epoch, time.Second); !errors.Is(err, engine.ErrLeaseLost) {
			t.Fatalf("renew at the lease's expiry: %v, want ErrLeaseLost", err)
		}
	})
}

func TestSnapshotAndStats(t *testing.T) {
	s, c, l, inc := cluster(t)
	snap := s.Snapshot()
	if len(snap.Leases) != 1 || snap.Leases[0].Epoch != l.Epoch || len(snap.Nodes) != 1 || len(snap.TaskLists) != 1 || len(snap.Assignments) != 2 || snap.Revision != 3 {
		t.Fatalf("snapshot: %+v", snap)
	}
	if snap.Assignments[0].Owner != "A" || snap.AssignRevisions["A"] != 2 || !snap.Now.Equal(start) {
		t.Fatalf("snapshot: %+v", snap)
	}
	// The snapshot is a copy.
	snap.Assignments[0].Owner = "X"
	if s.Snapshot().Assignments[0].Owner != "A" {
		t.Fatal("snapshot shares memory with the store")
	}

	// Steady state: a heartbeat and a renewal per period, plus reads, write nothing else.
	before := s.Stats()
	known := uint64(0)
	for range 10 {
		c.Advance(300 * time.Millisecond)
		hb := must(s.Heartbeat(ctx, "A", inc, known))
		known = hb.AssignRevision
		must(s.RenewLease(ctx, "coord", "c1", l.Epoch, time.Second))
		must(s.ReadState(ctx, snap.Revision))
		must(s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: l.Epoch}})) // empty plan
		if _, err := s.AcquireLease(ctx, "coord", "standby", time.Second); !errors.Is(err, engine.ErrLeaseHeld) {
			t.Fatalf("standby poll: %v", err)
		}
	}
	after := s.Stats()
	diff := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			diff[k] = d
		}
	}
	want := map[string]int{"heartbeat": 10, "renew": 10, "apply": 10}
	if !reflect.DeepEqual(diff, want) {
		t.Fatalf("writes in steady state: %v, want %v", diff, want)
	}
	if calls := s.Calls(); calls["acquire"] != 11 || calls["read_state"] != 10 {
		t.Fatalf("calls: %v", calls)
	}
	if s.Snapshot().Revision != snap.Revision {
		t.Fatal("steady state changed assignment rows")
	}
}

func TestSetLeaseStatus(t *testing.T) {
	s, _, l, _ := cluster(t)
	if err := s.SetLeaseStatus("nope", engine.LeaseDeletable, 0); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("unknown lease: %v", err)
	}
	if err := s.SetLeaseStatus("coord", engine.LeaseActive, 0); !errors.Is(err, engine.ErrInvalid) {
		t.Fatalf("status active: %v", err)
	}
	// A retired (deletable) lease is free: the next acquirer gets a new epoch, and the
	// retired holder's writes are fenced.
	if err := s.SetLeaseStatus("coord", engine.LeaseDeletable, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: l.Epoch}}); !errors.Is(err, engine.ErrFenced) {
		t.Fatalf("write fenced by a deletable lease: %v", err)
	}
	if got := must(s.AcquireLease(ctx, "coord", "c2", time.Second)).Lease; got.Epoch != l.Epoch+1 {
		t.Fatalf("acquire of a deletable lease: epoch %d, want %d", got.Epoch, l.Epoch+1)
	}
	// Raising the epoch after a failover: the next tenure starts above every lost grant.
	if err := s.SetLeaseStatus("coord", engine.LeaseInactive, 100); err != nil {
		t.Fatal(err)
	}
	if got := must(s.AcquireLease(ctx, "coord", "c3", time.Second)).Lease; got.Epoch != 101 {
		t.Fatalf("acquire after raising the epoch: %d, want 101", got.Epoch)
	}
}

// Many goroutines at once (as in dev mode): the race detector watches, and the result
// must be what the operations add up to whatever the interleaving.
func TestConcurrentUse(t *testing.T) {
	var mu sync.Mutex
	now := start
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(time.Millisecond); return now }
	s := memstore.New(clock)
	must(s.AcquireLease(ctx, "coord", "c1", time.Hour))
	must(s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 64}))
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("n%d", w)
			inc, err := s.RegisterNode(ctx, engine.NodeSpec{ID: id, Capacity: 1})
			if err != nil {
				t.Error(err)
				return
			}
			for i := range 8 {
				p := engine.PartitionID{Domain: "d", TaskList: "t", Partition: w*8 + i}
				// Coordinator-style optimistic write: read the row, assign it.
				rows, err := s.ReadAssignments(ctx, 0)
				if err != nil {
					t.Error(err)
					return
				}
				var rev uint64
				for _, r := range rows.Assignments {
					if r.Partition == p {
						rev = r.Revision
					}
				}
				_, err = s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "coord", Epoch: 1}, Changes: []engine.Change{
					{Kind: engine.ChangeAssign, Partition: p, Revision: rev, Owner: id, Incarnation: inc.Incarnation},
				}})
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Heartbeat(ctx, id, inc.Incarnation, 0); err != nil {
					t.Error(err)
					return
				}
				s.Snapshot()
			}
		}()
	}
	wg.Wait()
	snap := s.Snapshot()
	if snap.Revision != 128 {
		t.Fatalf("revision %d, want 64 created + 64 assigned", snap.Revision)
	}
	for _, r := range snap.Assignments {
		if want := fmt.Sprintf("n%d", r.Partition.Partition/8); r.Owner != want || r.Generation != 1 {
			t.Fatalf("row %+v, want owner %s", r, want)
		}
	}
	if st := s.Stats(); st["heartbeat"] != 64 || st["apply"] != 64 || st["register"] != 8 {
		t.Fatalf("stats %v", st)
	}
}

// The same calls at the same store times give the same replies and the same state.
func TestDeterministic(t *testing.T) {
	run := func() string {
		c := storetest.NewManualClock(start)
		s := memstore.New(c.Now)
		var out []any
		must(s.AcquireLease(ctx, "coord", "c1", time.Hour))
		for _, id := range []string{"z", "a", "m", "b"} {
			out = append(out, must(s.RegisterNode(ctx, engine.NodeSpec{ID: id, Capacity: 1})))
			c.Advance(time.Second)
		}
		for _, tl := range []string{"q", "b", "x"} {
			must(s.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: tl, Partitions: 5}))
		}
		out = append(out, must(s.ReadState(ctx, 0)))
		out = append(out, s.Snapshot())
		return fmt.Sprintf("%+v", out)
	}
	if a, b := run(), run(); a != b {
		t.Fatalf("two identical runs differ:\n%s\n%s", a, b)
	}
}

func TestNewNilClock(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("New(nil) must panic")
		}
	}()
	memstore.New(nil)
}

package mysqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/helixcoord/helix/engine"
	"github.com/helixcoord/helix/mysqlstore"
)

// TestConcurrentLeaseAndFencedWrites: many contenders, each with its own connection
// pool, race for one lease with a short TTL (so it changes hands by expiry and by
// release) and, while they believe they hold it, apply fenced writes — and keep trying
// with their old epoch after they lost it. Asserts: exactly one holder per epoch; every
// accepted write, in commit order, carries a non-decreasing epoch (no write from a stale
// epoch landed after a newer epoch's); writes at a released epoch are always fenced; and
// at the end every epoch but the last is refused.
func TestConcurrentLeaseAndFencedWrites(t *testing.T) {
	dsn := migratedDSN(t)
	ctx := context.Background()
	admin := openStore(t, dsn, "default")
	admin.PutTaskList(ctx, engine.TaskList{Domain: "d", Name: "t", Partitions: 1})
	reg, err := admin.RegisterNode(ctx, engine.NodeSpec{ID: "w", Capacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := engine.PartitionID{Domain: "d", TaskList: "t", Partition: 0}

	const contenders = 8
	const ttl = 60 * time.Millisecond
	// Race for at least 2 s, and on until enough changing writes got through (at most
	// 15 s): on a slower server (TiDB's two-phase commit; a loaded CI machine) fewer
	// writes land within a 60 ms tenure, and the assertions below need contention.
	const minRun, maxRun, enough = 2 * time.Second, 15 * time.Second, 20
	start := time.Now()
	var accepted atomic.Int64 // changing writes accepted so far
	racing := func() bool {
		el := time.Since(start)
		return el < minRun || (el < maxRun && accepted.Load() < enough)
	}

	type write struct {
		revision, epoch uint64
		who             string
	}
	var (
		mu      sync.Mutex
		holders = map[uint64]map[string]bool{}
		writes  []write
		maxSeen uint64
	)
	var wg sync.WaitGroup
	errc := make(chan error, contenders)
	for i := range contenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := fmt.Sprintf("c%d", i)
			s, err := mysqlstore.Open(ctx, dsn, mysqlstore.Options{})
			if err != nil {
				errc <- err
				return
			}
			defer s.Close()
			var stale []uint64 // epochs this contender held before
			step := 0
			for racing() {
				step++
				// A write with an epoch we no longer hold: must never land after a newer one.
				if len(stale) > 0 {
					e := stale[step%len(stale)]
					// A grant recorded before we send was committed before we send.
					mu.Lock()
					newer := maxSeen
					mu.Unlock()
					if r, err := s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: e}}); err == nil {
						if newer > e {
							errc <- fmt.Errorf("%s: write at epoch %d accepted after epoch %d was granted", me, e, newer)
							return
						}
						mu.Lock()
						writes = append(writes, write{r.Revision, e, me + "(stale)"})
						mu.Unlock()
					} else if !errors.Is(err, engine.ErrFenced) {
						errc <- fmt.Errorf("%s stale apply at %d: %v", me, e, err)
						return
					}
				}
				r, err := s.AcquireLease(ctx, "coordinator", me, ttl)
				if errors.Is(err, engine.ErrLeaseHeld) {
					continue
				}
				if err != nil {
					errc <- fmt.Errorf("%s acquire: %v", me, err)
					return
				}
				e := r.Lease.Epoch
				mu.Lock()
				if holders[e] == nil {
					holders[e] = map[string]bool{}
				}
				holders[e][me] = true
				maxSeen = max(maxSeen, e)
				mu.Unlock()
				// Fenced writes that change the row: assign / release / ack in turn.
				for range 2 {
					cur, err := s.ReadAssignments(ctx, 0)
					if err != nil {
						errc <- err
						return
					}
					row := cur.Assignments[0]
					var ch engine.Change
					switch row.State {
					case engine.Unassigned:
						ch = engine.Change{Kind: engine.ChangeAssign, Partition: p, Revision: row.Revision, Owner: "w", Incarnation: reg.Incarnation}
					case engine.Assigned:
						ch = engine.Change{Kind: engine.ChangeRelease, Partition: p, Revision: row.Revision}
					case engine.Releasing:
						if _, err := s.AckRelease(ctx, engine.Ack{Partition: p, Node: "w", Incarnation: reg.Incarnation, Generation: row.Generation}); err != nil && !errors.Is(err, engine.ErrConflict) {
							errc <- err
							return
						}
						continue
					}
					ar, err := s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: e}, Changes: []engine.Change{ch}})
					switch {
					case err == nil:
						accepted.Add(1)
						mu.Lock()
						writes = append(writes, write{ar.Revision, e, me})
						mu.Unlock()
					case errors.Is(err, engine.ErrFenced), errors.Is(err, engine.ErrConflict):
					default:
						errc <- fmt.Errorf("%s apply at %d: %v", me, e, err)
						return
					}
				}
				stale = append(stale, e)
				if step%2 == 0 {
					if _, err := s.ReleaseLease(ctx, "coordinator", me, e); err == nil {
						// Released: the epoch is dead at once.
						if _, err := s.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: e}}); !errors.Is(err, engine.ErrFenced) {
							errc <- fmt.Errorf("%s apply after releasing epoch %d: %v, want ErrFenced", me, e, err)
							return
						}
					} else if !errors.Is(err, engine.ErrLeaseLost) {
						errc <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if maxSeen < 5 {
		t.Fatalf("the lease changed hands only %d times: the test did not exercise contention", maxSeen)
	}
	for e, hs := range holders {
		if len(hs) != 1 {
			t.Errorf("epoch %d granted to %d holders: %v", e, len(hs), hs)
		}
	}
	// Empty batches do not bump the revision; order by (revision, epoch) and check that
	// the epochs of writes never go down along the commit order of changing writes.
	slices.SortStableFunc(writes, func(a, b write) int {
		if a.revision != b.revision {
			return int(a.revision) - int(b.revision)
		}
		return int(a.epoch) - int(b.epoch)
	})
	var changing int
	for i := 1; i < len(writes); i++ {
		if writes[i].revision != writes[i-1].revision {
			changing++
			if writes[i].epoch < writes[i-1].epoch {
				t.Errorf("write at revision %d by %s carries epoch %d, after revision %d at epoch %d: a stale epoch was accepted",
					writes[i].revision, writes[i].who, writes[i].epoch, writes[i-1].revision, writes[i-1].epoch)
			}
		}
	}
	if changing < 5 {
		t.Fatalf("only %d changing writes were accepted: no real contention", changing)
	}
	row, err := admin.ReadAssignments(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	l, err := admin.ReadLease(ctx, "coordinator")
	if err != nil {
		t.Fatal(err)
	}
	if row.Assignments[0].Epoch > l.Lease.Epoch {
		t.Fatalf("row written at epoch %d, above the lease's %d", row.Assignments[0].Epoch, l.Lease.Epoch)
	}
	for e := uint64(1); e < l.Lease.Epoch; e++ {
		if _, err := admin.Apply(ctx, engine.Batch{Fence: engine.Fence{Key: "coordinator", Epoch: e}}); !errors.Is(err, engine.ErrFenced) {
			t.Fatalf("Apply at old epoch %d (current %d): %v, want ErrFenced", e, l.Lease.Epoch, err)
		}
	}
	t.Logf("%d epochs, %d accepted writes (%d changing) in %v", maxSeen, len(writes), changing, time.Since(start).Round(time.Millisecond))
}
